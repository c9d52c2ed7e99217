"""The arrival processes: how each kind of workload places its send times.

- :class:`RateSchedule`: any deterministic piecewise-linear rate (constant, bursty, ramp); event i
  sits where the cumulative rate integral reaches i.
- :class:`ReplaySchedule`: a constant-rate RateSchedule whose payload comes from a file.
- :class:`PoissonSchedule`: seeded exponential gaps.
- :class:`ClosedLoopSchedule`: no send times at all (``outstanding`` batches in flight).

The semantics they share are in services.generator.schedules; the base class is
services.generator.schedule_base.Schedule.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from crayfish.payloads import iter_replay_batches, load_replay
from services.generator.schedule_base import DEFAULT_CHUNK, NS_PER_S, Schedule, count_eps, rechunk

__all__ = ["RateSchedule", "PoissonSchedule", "ReplaySchedule", "ClosedLoopSchedule"]

# Poisson gaps are drawn in blocks of this many; fixed so that the output does
# not depend on how the caller chunks it.
_POISSON_BLOCK = 1 << 16


class RateSchedule(Schedule):
    """Deterministic schedule defined by a piecewise-linear rate function.

    ``segments`` is a list of ``(start_s, end_s, rate_at_start, rate_at_end)``,
    contiguous from 0; the last segment may have end_s = inf (count-bound
    schedules). Event i sits where the cumulative rate integral Λ(t) equals i.
    """

    def __init__(self, kind: str, segments: Sequence[tuple[float, float, float, float]],
                 duration_s: float | None, count: int | None, seed: int = 0,
                 burst_windows: Sequence[tuple[float, float]] = (), period_s: float | None = None,
                 cyclic_segments: bool = False):
        super().__init__(kind, duration_s, count, seed)
        self._segments = [tuple(map(float, s)) for s in segments]
        self._burst_windows = [tuple(map(float, w)) for w in burst_windows]
        # cyclic: the segments describe one period [0, period_s) repeated forever
        self._period_s = period_s
        self._cyclic = cyclic_segments
        for a, b, r0, r1 in self._segments:
            if not b > a or r0 < 0 or r1 < 0:
                raise ValueError(f"bad segment {(a, b, r0, r1)}")

    # segments over the whole (possibly unbounded) time line
    def _iter_segments(self) -> Iterator[tuple[float, float, float, float]]:
        end = self.duration_s if self.duration_s is not None else math.inf
        if not self._cyclic:
            for a, b, r0, r1 in self._segments:
                if a >= end:
                    return
                if b > end:
                    # linear rate: cut it at end
                    r_end = r0 + (r1 - r0) * (end - a) / (b - a) if math.isfinite(b) else r0
                    yield (a, end, r0, r_end)
                    return
                yield (a, b, r0, r1)
            return
        k = 0
        P = float(self._period_s)
        while True:
            base = k * P
            for a, b, r0, r1 in self._segments:
                a2, b2 = base + a, base + b
                if a2 >= end:
                    return
                if b2 > end:
                    yield (a2, end, r0, r0 + (r1 - r0) * (end - a2) / (b2 - a2))
                    return
                yield (a2, b2, r0, r1)
            k += 1

    def _blocks(self) -> Iterator[np.ndarray]:
        cap = self.count if self.count is not None else math.inf
        produced = 0
        L = 0.0  # cumulative intended count at the start of the current segment
        block = DEFAULT_CHUNK
        for a, b, r0, r1 in self._iter_segments():
            T = b - a
            if math.isinf(T):
                dL = math.inf
                k = 0.0
            else:
                dL = (r0 + r1) / 2.0 * T
                k = (r1 - r0) / T  # rate slope (batches/s²)
            L_end = L + dL
            i_start = math.ceil(L - count_eps(L))
            i_end = math.ceil(L_end - count_eps(L_end)) if math.isfinite(L_end) else math.inf
            i = i_start
            while i < i_end and produced < cap:
                n = int(min(block, i_end - i, cap - produced))
                idx = np.arange(i, i + n, dtype=np.float64)
                delta = np.maximum(idx - L, 0.0)
                # solve r0·τ + k·τ²/2 = Δ for τ (numerically stable root)
                disc = np.sqrt(np.maximum(r0 * r0 + 2.0 * k * delta, 0.0))
                denom = r0 + disc
                with np.errstate(divide="ignore", invalid="ignore"):
                    tau = np.where(denom > 0, 2.0 * delta / denom, 0.0)
                if math.isfinite(T):
                    tau = np.minimum(tau, T)
                t_ns = np.rint(a * NS_PER_S + tau * NS_PER_S).astype(np.int64)
                yield t_ns
                produced += n
                i += n
            if produced >= cap:
                return
            L = L_end

    def iter_chunks(self, max_events: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        return rechunk(self._blocks(), max_events)

    def expected_count(self) -> float:
        if self.duration_s is None:
            return float(self.count)
        L = 0.0
        for a, b, r0, r1 in self._iter_segments():
            L += (r0 + r1) / 2.0 * (b - a)
        n = math.ceil(L - count_eps(L))
        return float(n if self.count is None else min(n, self.count))

    def rate_at(self, t_s):
        t = np.asarray(t_s, dtype=np.float64)
        out = np.zeros_like(t)
        tt = t if not self._cyclic else np.mod(t, float(self._period_s))
        for a, b, r0, r1 in self._segments:
            m = (tt >= a) & (tt < b)
            if math.isinf(b):
                out[m] = r0
            else:
                out[m] = r0 + (r1 - r0) * (tt[m] - a) / (b - a)
        if self.duration_s is not None:
            out[(t < 0) | (t >= self.duration_s)] = 0.0
        return float(out) if out.ndim == 0 else out

    @property
    def bursts(self) -> list[tuple[float, float]]:
        if not self._burst_windows:
            return []
        end = self.end_s()
        out: list[tuple[float, float]] = []
        P = float(self._period_s)
        k = 0
        while True:
            added = False
            for s, e in self._burst_windows:
                s2, e2 = k * P + s, k * P + e
                if s2 >= end:
                    continue
                out.append((s2, min(e2, end)))
                added = True
            if not added:
                break
            k += 1
        return sorted(out)


class PoissonSchedule(Schedule):
    """Poisson process: exponential gaps with mean 1/rate from ``default_rng(seed)``."""

    def __init__(self, rate: float, duration_s: float | None, count: int | None, seed: int = 0):
        super().__init__("poisson", duration_s, count, seed)
        if not rate > 0:
            raise ValueError("rate must be > 0")
        self.rate = float(rate)

    def _blocks(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        scale_ns = NS_PER_S / self.rate
        end_ns = self.duration_s * NS_PER_S if self.duration_s is not None else math.inf
        cap = self.count if self.count is not None else math.inf
        t0 = 0.0
        produced = 0
        while produced < cap:
            gaps = rng.exponential(scale_ns, size=_POISSON_BLOCK)
            t = t0 + np.cumsum(gaps)
            t0 = float(t[-1])
            stop = False
            if t[-1] >= end_ns:
                t = t[: int(np.searchsorted(t, end_ns, side="left"))]
                stop = True
            if produced + len(t) >= cap:
                t = t[: int(cap - produced)]
                stop = True
            produced += len(t)
            if len(t):
                yield np.rint(t).astype(np.int64)
            if stop:
                return

    def iter_chunks(self, max_events: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        return rechunk(self._blocks(), max_events)

    def expected_count(self) -> float:
        if self.duration_s is None:
            return float(self.count)
        n = self.rate * self.duration_s
        return float(n if self.count is None else min(n, self.count))

    def rate_at(self, t_s):
        t = np.asarray(t_s, dtype=np.float64)
        out = np.full_like(t, self.rate)
        if self.duration_s is not None:
            out[(t < 0) | (t >= self.duration_s)] = 0.0
        return float(out) if out.ndim == 0 else out


class ReplaySchedule(RateSchedule):
    """Constant-rate timing plus a payload file (see :func:`load_replay`)."""

    def __init__(self, path: str | Path, key: str | None, rate: float,
                 duration_s: float | None, count: int | None, seed: int = 0):
        if not rate > 0:
            raise ValueError("rate must be > 0")
        super().__init__("replay", [(0.0, math.inf, rate, rate)], duration_s, count, seed)
        self.path = Path(path)
        self.key = key
        self.rate = float(rate)

    def load(self) -> np.ndarray:
        """Load the replay data (rows = data points)."""
        return load_replay(self.path, self.key)

    def batches(self, batch_size: int, data: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Endless cyclic batches of ``batch_size`` rows (loads the file if ``data`` is None)."""
        return iter_replay_batches(self.load() if data is None else data, batch_size)


class ClosedLoopSchedule(Schedule):
    """Closed loop: no send times; the generator keeps ``outstanding`` batches in flight
    and stops after ``count`` batches or ``duration_s`` seconds. By convention
    ``intended_ns == created_ns`` for every batch."""

    open_loop = False

    def __init__(self, outstanding: int, duration_s: float | None, count: int | None, seed: int = 0):
        super().__init__("closed_loop", duration_s, count, seed)
        if outstanding < 1:
            raise ValueError("outstanding must be >= 1")
        self.outstanding = int(outstanding)

    def iter_chunks(self, max_events: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        raise TypeError("closed-loop workload has no send schedule; keep "
                        f"{self.outstanding} batch(es) outstanding instead")

    def times_ns(self) -> np.ndarray:
        return self.iter_chunks()  # raises

    def expected_count(self) -> float:
        return float(self.count) if self.count is not None else float("nan")

    def rate_at(self, t_s):
        return float("nan")

    def end_s(self) -> float:
        return self.duration_s if self.duration_s is not None else float("nan")
