"""Check a sample of the predictions a run produced against the reference model.

The generator's inputs are reproducible (seeded pool, or the replay file), so the collector rebuilds
the input of a sampled batch from its sequence number, runs the numpy reference forward pass of
the model (serving.models.reference_forward, independent of every serving backend) and compares
(float32, absolute tolerance 1e-4). The sample is deterministic (a hash of the batch id), so a
re-run checks the same batches. Reference outputs are cached per pool entry, and the checking time
is capped (ResNet50's numpy forward pass takes about a second per image on one core).

Calibration backends (noop, sleep) return zeros by design: they are not checked.
"""

from __future__ import annotations

import time
import zlib

import numpy as np

from services.generator.generator import input_pool_for
from serving.models import model_paths, reference_forward

UNCHECKED_BACKENDS = {"noop", "sleep"}


class PredictionChecker:
    def __init__(self, generator_settings, models_dir=None, sample_rate: float = 0.01,
                 tolerance: float = 1e-4, max_seconds: float = 30.0):
        self.model = generator_settings.model
        self.weights = model_paths(self.model, models_dir).weights
        self.pool = input_pool_for(generator_settings)
        self.threshold = int(sample_rate * 2**32)
        self.tolerance = tolerance
        self.max_seconds = max_seconds
        self.spent = 0.0
        self.cache: dict[int, np.ndarray] = {}
        self.checked = 0
        self.wrong = 0
        self.skipped_budget = 0
        self.max_abs_error = 0.0

    def sampled(self, batch_id: str) -> bool:
        return zlib.crc32(batch_id.encode()) < self.threshold

    def check(self, sequence: int, output: np.ndarray) -> bool | None:
        """True/False for a checked batch; None when the time budget is spent."""
        index = sequence % len(self.pool)
        ref = self.cache.get(index)
        if ref is None:
            if self.spent >= self.max_seconds:
                self.skipped_budget += 1
                return None
            t0 = time.perf_counter()
            ref = reference_forward(self.model, self.weights, self.pool[index])
            self.spent += time.perf_counter() - t0
            self.cache[index] = ref
        self.checked += 1
        ok = output.shape == ref.shape
        if ok:
            err = float(np.max(np.abs(output.astype(np.float32) - ref))) if ref.size else 0.0
            self.max_abs_error = max(self.max_abs_error, err)
            ok = err <= self.tolerance
        if not ok:
            self.wrong += 1
        return ok

    def report(self) -> dict:
        return {"checked": self.checked, "wrong": self.wrong, "tolerance": self.tolerance,
                "max_abs_error": self.max_abs_error, "skipped_over_budget": self.skipped_budget,
                "reference": f"numpy forward pass of {self.model} (serving.models.reference_forward)"}
