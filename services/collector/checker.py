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
"""

from __future__ import annotations

import time
import zlib

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
        self.max_abs_error = 0.0

    def sampled(self, batch_id: str) -> bool:
        return zlib.crc32(batch_id.encode()) < self.threshold

    def check(self, sequence: int, output) -> bool | None:
        """True/False for a checked batch; None when the time budget is spent. ``output``: an array,
        or ``{output name: array}`` (the named-tensor contract), compared name by name."""
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
                "reference": self.reference}
