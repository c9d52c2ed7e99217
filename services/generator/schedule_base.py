"""The contract every workload schedule fulfils (:class:`Schedule`), and its shared helpers.

A schedule yields the intended send times of an open-loop workload as int64 ns offsets from the
start of the run; services.generator.schedules describes the semantics, services.generator.arrivals
holds the arrival processes that implement it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["Schedule", "NS_PER_S", "DEFAULT_CHUNK", "rechunk", "count_eps"]

NS_PER_S = 1_000_000_000

#: Default number of events per chunk yielded by :meth:`Schedule.iter_chunks`.
DEFAULT_CHUNK = 1 << 16


def count_eps(x: float) -> float:
    """Tolerance for float fuzz when comparing cumulative counts to integers."""
    return 1e-9 * max(1.0, abs(x))


class Schedule:
    """Base class of all schedules. Subclasses fill in :meth:`iter_chunks`.

    Attributes
    ----------
    kind: the workload ``type`` (``constant``, ``poisson``, ...).
    duration_s, count: the bounds (either may be None, not both).
    seed: the seed the schedule was built with (only Poisson uses it).
    open_loop: False only for :class:`ClosedLoopSchedule`.
    """

    open_loop: bool = True

    def __init__(self, kind: str, duration_s: float | None, count: int | None, seed: int = 0):
        if duration_s is None and count is None:
            raise ValueError("schedule needs duration_s or count")
        if duration_s is not None and not duration_s > 0:
            raise ValueError("duration_s must be > 0")
        if count is not None and count <= 0:
            raise ValueError("count must be > 0")
        self.kind = kind
        self.duration_s = None if duration_s is None else float(duration_s)
        self.count = None if count is None else int(count)
        self.seed = int(seed)

    # -- to be provided by subclasses ------------------------------------------------
    def iter_chunks(self, max_events: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        """Yield the intended send times (int64 ns offsets, non-decreasing) in chunks
        of at most ``max_events``. Concatenated, the chunks always equal
        :meth:`times_ns` regardless of ``max_events``."""
        raise NotImplementedError

    def expected_count(self) -> float:
        """Number of events (exact for deterministic schedules, the mean for Poisson)."""
        raise NotImplementedError

    def rate_at(self, t_s: float | np.ndarray) -> float | np.ndarray:
        """Nominal rate (batches/s) at offset t_s seconds (the mean rate for Poisson)."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------
    def times_ns(self) -> np.ndarray:
        """All intended send times as one int64 array of ns offsets from start."""
        chunks = list(self.iter_chunks())
        if not chunks:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(chunks)

    @property
    def offsets_ns(self) -> np.ndarray:
        """Cached :meth:`times_ns` (int64 ns offsets from start); read-only array."""
        cached = getattr(self, "_offsets_cache", None)
        if cached is None:
            cached = self.times_ns()
            cached.setflags(write=False)
            self._offsets_cache = cached
        return cached

    def times_s(self) -> np.ndarray:
        """All intended send times in seconds (float64); convenience for analysis."""
        return self.times_ns() / NS_PER_S

    @property
    def bursts(self) -> list[tuple[float, float]]:
        """Burst windows ``(start_s, end_s)`` as offsets from the schedule start.
        Empty for every workload except bursty."""
        return []

    def end_s(self) -> float:
        """Offset (s) at which the schedule ends: duration_s, or for a count-only
        bound the time of the last event (materialises the schedule)."""
        if self.duration_s is not None and self.count is None:
            return self.duration_s
        t = self.times_ns()
        last = float(t[-1]) / NS_PER_S if len(t) else 0.0
        return last if self.duration_s is None else min(self.duration_s, last)

    @property
    def mean_rate(self) -> float:
        """expected_count() / the schedule's length in seconds (batches/s). The length is
        duration_s when only duration bounds the schedule, else :meth:`end_s`."""
        span = self.duration_s if (self.duration_s is not None and self.count is None) else self.end_s()
        return self.expected_count() / span if span and span > 0 else float("nan")

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return (f"{type(self).__name__}(kind={self.kind!r}, duration_s={self.duration_s}, "
                f"count={self.count}, seed={self.seed})")


def rechunk(blocks: Iterator[np.ndarray], max_events: int) -> Iterator[np.ndarray]:
    """Split arrays from ``blocks`` so that no chunk exceeds ``max_events``."""
    if max_events <= 0:
        raise ValueError("max_events must be > 0")
    for b in blocks:
        for i in range(0, len(b), max_events):
            yield b[i:i + max_events]


