"""Calibration backends: ``noop`` (no work at all) and ``sleep`` (a known, fixed cost)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from crayfish.tensor import feed_rows
from serving.embedded.base import Option, Scorer, non_negative


class NoopScorer(Scorer):
    """Returns zeros of the output shape: measures everything but the model."""

    name = "noop"
    needs_artifacts = False

    def _score(self, x):
        return self.model.zeros(feed_rows(x), self.model.outputs)


class SleepScorer(Scorer):
    """Takes exactly ``delay_ms`` per call, then returns zeros: a 50 ms delay must show up as
    50 ms in the measured latency.

    ``time.sleep`` overshoots by ~0.1-0.2 ms (more on a busy host), so it sleeps until
    ``spin_us`` before the deadline and then polls the clock with ``time.sleep(0)`` (releases the
    GIL, so other threads of the worker keep running). The call never returns early.
    """

    name = "sleep"
    needs_artifacts = False
    OPTIONS = {
        "delay_ms": Option(float, help="per-call delay in milliseconds (>= 0)", check=non_negative),
        "spin_us": Option(float, 1000.0, "final stretch polled instead of slept, microseconds",
                          non_negative),
    }

    @classmethod
    def options_from(cls, *, threads: int = 1, inter_threads: int = 1, device: str = "cpu",
                     delay_ms: float | None = None) -> dict[str, Any]:
        return {"delay_ms": delay_ms}

    def __init__(self, model, artifacts=None, **options: Any):
        super().__init__(model, artifacts, **options)
        self._delay_ns = int(round(self.options["delay_ms"] * 1e6))
        self._spin_ns = int(round(self.options["spin_us"] * 1e3))

    def _score(self, x: np.ndarray) -> np.ndarray:
        clock = time.perf_counter_ns
        deadline = clock() + self._delay_ns
        coarse = self._delay_ns - self._spin_ns
        if coarse > 0:
            time.sleep(coarse / 1e9)
        while clock() < deadline:
            time.sleep(0)
        return self.model.zeros(feed_rows(x), self.model.outputs)


SCORERS = (NoopScorer, SleepScorer)
