"""Check a sample of the predictions a run produced against the reference model.

The generator's inputs are reproducible (seeded pool, or the replay file), so the collector rebuilds
the input of a sampled batch from its sequence number, runs the model's reference
(serving.models.reference_predictions: the numpy forward pass of a built-in model, independent of
every serving backend; ONNX Runtime on the CPU on the file of a user's model) and compares
(|output - reference| <= atol + rtol * |reference| for every value of every output, by name; by
default atol 1e-4, rtol 0 -- ``prediction_tolerance`` of an experiment). The sample is deterministic (a hash of the batch id), so a
re-run checks the same batches. Reference outputs are cached per pool entry, and the checking time
is capped (ResNet50's numpy forward pass takes about a second per image on one core).

Calibration backends (noop, sleep) return zeros by design: they are not checked.

Where the check applies, and where not (the collector's report says which, and how often):

- not at all without a sample rate, without the generator's settings (the inputs cannot be
  rebuilt) or for a calibration backend (:func:`not_checked_note`);
- not for an output of another run (its batch id lacks this run's ``<run_id>-`` prefix: its input is
  not in this run's pool), nor for one that carried no ids and matched no sent batch: ``skipped``;
- an output that carried no ids (crayfish-json through a pipeline that drops the headers) is sampled
  by its echo key and checked once the collector matched it to its batch (then its sequence is known).
"""

from __future__ import annotations

import time
import zlib
from collections import Counter

import numpy as np

from services.generator.generator import input_pool_for
from serving.models import reference_of, reference_predictions, resolve_spec
from serving.models.build import reference_predictions_many
from serving.models.files import FRAMEWORK_REFERENCES

UNCHECKED_BACKENDS = {"noop", "sleep"}


class PredictionChecker:
    def __init__(self, generator_settings, models_dir=None, sample_rate: float = 0.01,
                 atol: float = 1e-4, rtol: float = 0.0, max_seconds: float = 30.0):
        self.model = generator_settings.model
        self.models_dir = models_dir
        self.reference = reference_of(self.model, models_dir)
        self.pool = input_pool_for(generator_settings)
        self.cache: dict[int, np.ndarray] = {}
        self.spent = 0.0
        if self.reference.startswith(FRAMEWORK_REFERENCES):
            # libtorch / TensorFlow live in their own environments: the whole pool in one run there
            t0 = time.perf_counter()
            self.cache = dict(enumerate(reference_predictions_many(self.model, models_dir, self.pool)))
            self.spent = time.perf_counter() - t0
        self.output_name = resolve_spec(self.model, models_dir).output_name
        self.threshold = int(sample_rate * 2**32)
        self.atol, self.rtol = atol, rtol
        self.max_seconds = max_seconds
        self.checked = 0
        self.wrong = 0
        self.skipped_budget = 0
        self.skipped: Counter[str] = Counter()   # reason -> outputs not checked for it
        self.run_prefix = f"{generator_settings.run_id}-" if getattr(generator_settings, "run_id", "") else ""
        self.max_abs_error = 0.0

    def sampled(self, batch_id: str) -> bool:
        return zlib.crc32(batch_id.encode()) < self.threshold

    def skip(self, reason: str) -> None:
        """An output sampled for the check that cannot be checked, for ``reason``."""
        self.skipped[reason] += 1

    def check(self, sequence: int, output, batch_id: str | None = None) -> bool | None:
        """True/False for a checked batch; None when the time budget is spent or the check does not
        apply (``batch_id`` of another run). ``output``: an array, or ``{output name: array}`` (the
        named-tensor contract), compared name by name."""
        if batch_id is not None and self.run_prefix and not batch_id.startswith(self.run_prefix):
            self.skip("not a batch of this run: its input is not in the run's pool")
            return None
        index = sequence % len(self.pool)
        ref = self.cache.get(index)
        if ref is None:
            if self.spent >= self.max_seconds:
                self.skipped_budget += 1
                return None
            t0 = time.perf_counter()
            ref = reference_predictions(self.model, self.models_dir, self.pool[index])
            self.spent += time.perf_counter() - t0
            self.cache[index] = ref
        self.checked += 1
        got, want = self._named(output), self._named(ref)
        ok = got.keys() == want.keys()
        for name in want if ok else ():
            ok = self._close(got[name], want[name]) and ok
        if not ok:
            self.wrong += 1
        return ok

    def _named(self, y) -> dict:
        return y if isinstance(y, dict) else {self.output_name: y}

    def _close(self, output: np.ndarray, ref: np.ndarray) -> bool:
        if output.shape != ref.shape:
            return False
        ref = ref.astype(np.float64)
        diff = np.abs(output.astype(np.float64) - ref)
        if diff.size:
            self.max_abs_error = max(self.max_abs_error, float(np.max(diff)))
        return bool(np.all(diff <= self.atol + self.rtol * np.abs(ref)))

    def report(self) -> dict:
        return {"checked": self.checked, "wrong": self.wrong, "atol": self.atol, "rtol": self.rtol,
                "max_abs_error": self.max_abs_error, "skipped_over_budget": self.skipped_budget,
                "skipped": dict(self.skipped), "reference": self.reference}


def not_checked_note(sample_rate: float, generator_settings: str | None, backend: str) -> str:
    """Why a collector checks no prediction at all (its report's ``predictions.note``)."""
    if sample_rate <= 0:
        return "not checked: check_sample is 0"
    if not generator_settings:
        return "not checked: no generator settings, so the inputs cannot be rebuilt"
    if backend in UNCHECKED_BACKENDS:
        return f"not checked: {backend} is a calibration backend (its outputs are zeros by design)"
    return "not checked"
