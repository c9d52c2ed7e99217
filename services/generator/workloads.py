"""Workload schedules and synthetic input data for the Crayfish Mesh generator.

Everything here is pure, seeded and Kafka-free, so it can be tested on its own.

Schedules
---------
An *open-loop* workload is a sequence of **intended send times**: int64
nanosecond offsets from the start of the run (t = 0 is the moment the generator
starts its schedule). The generator adds its own wall-clock start (ns) to get
the absolute ``intended_ns`` it stamps on each batch, sends at (or as soon as
possible after) that time, and stamps ``created_ns`` with the wall clock at the
moment it builds the batch. Times come out as numpy arrays, either all at once
(:meth:`Schedule.times_ns`) or in chunks (:meth:`Schedule.iter_chunks`); both
are vectorised and cost well under a microsecond per event, so 50k+ events/s
are no problem.

Deterministic rate schedules (constant, bursty, ramp, replay) place event *i*
at the time where the cumulative intended count ``Λ(t) = ∫₀ᵗ rate(u) du``
reaches *i* (i = 0, 1, 2, ...). For a constant rate r that is exactly
``t_i = i / r`` (the first batch goes at t = 0); over a piecewise rate the
spacing follows the current rate without any gap or double send at a rate
change. The number of events in ``[0, duration_s)`` is ``ceil(Λ(duration_s))``
— for a constant rate ``ceil(rate × duration_s)``, i.e. exactly
``rate × duration_s`` when that is a whole number.

The Poisson schedule draws exponential inter-arrival gaps (mean 1/rate) from
``numpy.random.default_rng(seed)``; the first arrival is one gap after t = 0.
Gaps are drawn in fixed blocks, so the output depends only on the seed and the
config, never on how a caller chunks it.

Every schedule is bounded by ``duration_s`` (events with t < duration_s), by
``count`` (at most that many events), or both (whichever ends first).

A *closed-loop* workload (:class:`ClosedLoopSchedule`) has no send times: the
generator keeps ``outstanding`` batches in flight and sends the next one when a
result comes back. By convention a closed-loop batch carries
``intended_ns == created_ns`` (there is no schedule to lag behind), so
"latency from schedule" equals latency for closed-loop runs.

Replay
------
:func:`load_replay` loads recorded data points (rows along axis 0) from a
``.npy`` or ``.npz`` file; :func:`iter_replay_batches` cuts them into batches
of ``batch_size`` rows, wrapping around cyclically. The *timing* of a replay
workload is a constant-rate schedule (``rate`` batches/s), exactly like
``constant``; only the payload comes from the file. Recorded timestamps, if a
file has any, are not used.

Synthetic data
--------------
:func:`synthetic_pool` builds a seeded pool of ready-made batches outside the
timed path; the generator reuses them cyclically (:func:`cycle_pool`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

__all__ = [
    "ConstantConfig",
    "PoissonConfig",
    "BurstyConfig",
    "ClosedLoopConfig",
    "RampConfig",
    "ReplayConfig",
    "WorkloadConfig",
    "WORKLOAD_ADAPTER",
    "parse_workload",
    "build_schedule",
    "bursty_from_sustainable",
    "Schedule",
    "RateSchedule",
    "PoissonSchedule",
    "ReplaySchedule",
    "ClosedLoopSchedule",
    "constant",
    "poisson",
    "bursty",
    "ramp",
    "replay",
    "closed_loop",
    "load_replay",
    "replay_batch",
    "iter_replay_batches",
    "synthetic_pool",
    "cycle_pool",
    "PAPER_BURST_BASE_FRACTION",
    "PAPER_BURST_PEAK_FRACTION",
    "PAPER_BURST_BASE_S",
    "PAPER_BURST_S",
]

NS_PER_S = 1_000_000_000

#: Default number of events per chunk yielded by :meth:`Schedule.iter_chunks`.
DEFAULT_CHUNK = 1 << 16

# Poisson gaps are drawn in blocks of this many; fixed so that the output does
# not depend on how the caller chunks it.
_POISSON_BLOCK = 1 << 16

# The Crayfish paper's bursty workload (input-producer of the reference
# implementation): a stable phase at 0.7×ST for 120 s, then a burst at 1.1×ST
# for 30 s, repeating (period 150 s), starting with the stable phase.
PAPER_BURST_BASE_FRACTION = 0.7
PAPER_BURST_PEAK_FRACTION = 1.1
PAPER_BURST_BASE_S = 120.0
PAPER_BURST_S = 30.0


def _eps(x: float) -> float:
    """Tolerance for float fuzz when comparing cumulative counts to integers."""
    return 1e-9 * max(1.0, abs(x))


# --------------------------------------------------------------------------------------
# Configs (pydantic v2, discriminated on ``type``)
# --------------------------------------------------------------------------------------


class _WorkloadBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    duration_s: float | None = Field(default=30.0, gt=0)
    """Length of the schedule in seconds: events with intended time < duration_s.
    May be None only when ``count`` is given."""

    count: int | None = Field(default=None, gt=0)
    """Optional cap on the number of batches; with duration_s, whichever ends first."""

    @model_validator(mode="after")
    def _bounded(self):
        if self.duration_s is None and self.count is None:
            raise ValueError("a workload needs duration_s or count (or both)")
        return self


class ConstantConfig(_WorkloadBase):
    """Constant-rate open-loop workload: batch i at t = i / rate (first at t = 0)."""

    type: Literal["constant"] = "constant"
    """Discriminator."""

    rate: float | None = Field(default=None, gt=0)
    """Batches per second. Give exactly one of rate and period_s."""

    period_s: float | None = Field(default=None, gt=0)
    """Alternative to rate: one batch every period_s seconds (rate = 1/period_s);
    useful for rates below 1/s."""

    @model_validator(mode="after")
    def _one_of(self):
        if (self.rate is None) == (self.period_s is None):
            raise ValueError("constant workload: give exactly one of rate or period_s")
        return self

    @property
    def effective_rate(self) -> float:
        """Rate in batches/s whichever of rate / period_s was given."""
        return float(self.rate) if self.rate is not None else 1.0 / float(self.period_s)


class PoissonConfig(_WorkloadBase):
    """Poisson arrivals: exponential inter-arrival gaps with mean 1/rate (seeded)."""

    type: Literal["poisson"] = "poisson"
    """Discriminator."""

    rate: float = Field(gt=0)
    """Mean rate in batches per second."""


class BurstyConfig(_WorkloadBase):
    """Base rate for (period_s − burst_s) seconds, then burst_rate for burst_s, repeating.

    Cycle k covers [k·period_s, (k+1)·period_s); its burst window is
    [k·period_s + period_s − burst_s, (k+1)·period_s). The run starts at the base rate.
    """

    type: Literal["bursty"] = "bursty"
    """Discriminator."""

    base_rate: float = Field(gt=0)
    """Rate (batches/s) outside bursts."""

    burst_rate: float = Field(gt=0)
    """Rate (batches/s) during bursts."""

    burst_s: float = Field(default=PAPER_BURST_S, gt=0)
    """Length of each burst in seconds (paper: 30 s)."""

    period_s: float = Field(default=PAPER_BURST_BASE_S + PAPER_BURST_S, gt=0)
    """Length of one base+burst cycle in seconds (paper: 120 s base + 30 s burst = 150 s)."""

    duration_s: float | None = Field(default=600.0, gt=0)
    """Length of the schedule in seconds (default 600 s = four paper cycles)."""

    @model_validator(mode="after")
    def _burst_fits(self):
        if not self.burst_s < self.period_s:
            raise ValueError("bursty workload: burst_s must be shorter than period_s")
        return self


class ClosedLoopConfig(_WorkloadBase):
    """Closed loop: keep ``outstanding`` batches in flight; no send schedule.

    intended_ns == created_ns for every batch by convention.
    """

    type: Literal["closed_loop"] = "closed_loop"
    """Discriminator."""

    outstanding: int = Field(default=1, ge=1)
    """Number of batches kept in flight (sent but not yet answered)."""


class RampConfig(_WorkloadBase):
    """Rate rising (or falling) linearly from start_rate at t=0 to end_rate at t=duration_s."""

    type: Literal["ramp"] = "ramp"
    """Discriminator."""

    start_rate: float = Field(ge=0)
    """Rate (batches/s) at t = 0."""

    end_rate: float = Field(ge=0)
    """Rate (batches/s) at t = duration_s."""

    duration_s: float = Field(default=30.0, gt=0)
    """Length of the ramp in seconds (required: the ramp slope depends on it)."""

    @model_validator(mode="after")
    def _not_both_zero(self):
        if self.start_rate == 0 and self.end_rate == 0:
            raise ValueError("ramp workload: start_rate and end_rate cannot both be 0")
        return self


class ReplayConfig(_WorkloadBase):
    """Replay recorded data points from a .npy/.npz file at a constant rate.

    Timing is exactly the constant schedule (batch i at i / rate); only the
    payload comes from the file, batch_size rows per batch, wrapping around.
    """

    type: Literal["replay"] = "replay"
    """Discriminator."""

    path: str
    """Path of a .npy file, or a .npz archive, holding data points along axis 0."""

    key: str | None = None
    """Array name inside a .npz archive; None takes the first array. Ignored for .npy."""

    rate: float = Field(gt=0)
    """Batches per second (constant-rate timing)."""

    @model_validator(mode="after")
    def _suffix(self):
        if Path(self.path).suffix.lower() not in (".npy", ".npz"):
            raise ValueError(f"replay path must end in .npy or .npz: {self.path!r}")
        return self


WorkloadConfig = Annotated[
    Union[ConstantConfig, PoissonConfig, BurstyConfig, ClosedLoopConfig, RampConfig, ReplayConfig],
    Field(discriminator="type"),
]
"""Any workload config; pydantic picks the class from the ``type`` field."""

WORKLOAD_ADAPTER: TypeAdapter = TypeAdapter(WorkloadConfig, config=ConfigDict(title="WorkloadConfig"))


def parse_workload(data: Any) -> BaseModel:
    """Validate a dict (e.g. from YAML) or an existing config into a workload config."""
    if isinstance(data, BaseModel):
        return data
    return WORKLOAD_ADAPTER.validate_python(data)


def bursty_from_sustainable(
    sustainable_rate: float,
    *,
    duration_s: float | None = 600.0,
    count: int | None = None,
    base_fraction: float = PAPER_BURST_BASE_FRACTION,
    burst_fraction: float = PAPER_BURST_PEAK_FRACTION,
    base_s: float = PAPER_BURST_BASE_S,
    burst_s: float = PAPER_BURST_S,
) -> BurstyConfig:
    """The paper's bursty workload built from a sustainable throughput ST (batches/s).

    Defaults: base 0.7×ST for 120 s, then burst 1.1×ST for 30 s (period 150 s),
    starting with the base phase — as in the Crayfish reference input producer.
    """
    if not sustainable_rate > 0:
        raise ValueError("sustainable_rate must be > 0")
    return BurstyConfig(
        base_rate=base_fraction * sustainable_rate,
        burst_rate=burst_fraction * sustainable_rate,
        burst_s=burst_s,
        period_s=base_s + burst_s,
        duration_s=duration_s,
        count=count,
    )


# --------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------


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


def _rechunk(blocks: Iterator[np.ndarray], max_events: int) -> Iterator[np.ndarray]:
    """Split arrays from ``blocks`` so that no chunk exceeds ``max_events``."""
    if max_events <= 0:
        raise ValueError("max_events must be > 0")
    for b in blocks:
        for i in range(0, len(b), max_events):
            yield b[i:i + max_events]


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
            i_start = math.ceil(L - _eps(L))
            i_end = math.ceil(L_end - _eps(L_end)) if math.isfinite(L_end) else math.inf
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
        return _rechunk(self._blocks(), max_events)

    def expected_count(self) -> float:
        if self.duration_s is None:
            return float(self.count)
        L = 0.0
        for a, b, r0, r1 in self._iter_segments():
            L += (r0 + r1) / 2.0 * (b - a)
        n = math.ceil(L - _eps(L))
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
        return _rechunk(self._blocks(), max_events)

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


# -- plain constructors ----------------------------------------------------------------


def constant(rate: float | None = None, *, period_s: float | None = None,
             duration_s: float | None = 30.0, count: int | None = None, seed: int = 0) -> RateSchedule:
    """Constant rate (batches/s) or one batch every ``period_s`` seconds; batch i at
    i / rate (resp. i · period_s), the first at t = 0."""
    if (rate is None) == (period_s is None):
        raise ValueError("give exactly one of rate or period_s")
    r = float(rate) if rate is not None else 1.0 / float(period_s)
    if not r > 0:
        raise ValueError("rate must be > 0")
    return RateSchedule("constant", [(0.0, math.inf, r, r)], duration_s, count, seed)


def poisson(rate: float, seed: int = 0, *, duration_s: float | None = 30.0,
            count: int | None = None) -> PoissonSchedule:
    """Poisson arrivals with mean rate ``rate`` (batches/s), seeded."""
    return PoissonSchedule(rate, duration_s, count, seed)


def bursty(base_rate: float, burst_rate: float, burst_s: float, period_s: float, *,
           duration_s: float | None = 600.0, count: int | None = None, seed: int = 0) -> RateSchedule:
    """Base rate for (period_s − burst_s) s, then burst_rate for burst_s s, repeating.
    ``schedule.bursts`` lists the burst windows (start_s, end_s)."""
    if not (base_rate > 0 and burst_rate > 0 and burst_s > 0 and period_s > burst_s):
        raise ValueError("need base_rate, burst_rate, burst_s > 0 and period_s > burst_s")
    b0 = period_s - burst_s
    segs = [(0.0, b0, base_rate, base_rate), (b0, period_s, burst_rate, burst_rate)]
    return RateSchedule("bursty", segs, duration_s, count, seed,
                        burst_windows=[(b0, float(period_s))], period_s=float(period_s),
                        cyclic_segments=True)


def ramp(start_rate: float, end_rate: float, duration_s: float, *,
         count: int | None = None, seed: int = 0) -> RateSchedule:
    """Rate linear from start_rate (t=0) to end_rate (t=duration_s)."""
    if start_rate < 0 or end_rate < 0 or (start_rate == 0 and end_rate == 0):
        raise ValueError("ramp rates must be >= 0 and not both 0")
    if not duration_s > 0:
        raise ValueError("duration_s must be > 0")
    return RateSchedule("ramp", [(0.0, float(duration_s), start_rate, end_rate)],
                        duration_s, count, seed)


def replay(path: str | Path, rate: float, *, key: str | None = None,
           duration_s: float | None = 30.0, count: int | None = None, seed: int = 0) -> ReplaySchedule:
    """Replay file payloads at a constant rate (timing identical to :func:`constant`)."""
    return ReplaySchedule(path, key, rate, duration_s, count, seed)


def closed_loop(outstanding: int = 1, *, duration_s: float | None = 30.0,
                count: int | None = None, seed: int = 0) -> ClosedLoopSchedule:
    """Closed-loop spec: keep ``outstanding`` batches in flight."""
    return ClosedLoopSchedule(outstanding, duration_s, count, seed)


def build_schedule(cfg: Any, seed: int = 0) -> Schedule:
    """Build the schedule for a workload config (model instance or plain dict).

    The same (config, seed) always gives the same schedule; only Poisson uses the seed.
    """
    cfg = parse_workload(cfg)
    if isinstance(cfg, ConstantConfig):
        return constant(cfg.rate, period_s=cfg.period_s, duration_s=cfg.duration_s,
                        count=cfg.count, seed=seed)
    if isinstance(cfg, PoissonConfig):
        return poisson(cfg.rate, seed, duration_s=cfg.duration_s, count=cfg.count)
    if isinstance(cfg, BurstyConfig):
        return bursty(cfg.base_rate, cfg.burst_rate, cfg.burst_s, cfg.period_s,
                      duration_s=cfg.duration_s, count=cfg.count, seed=seed)
    if isinstance(cfg, RampConfig):
        return ramp(cfg.start_rate, cfg.end_rate, cfg.duration_s, count=cfg.count, seed=seed)
    if isinstance(cfg, ReplayConfig):
        return replay(cfg.path, cfg.rate, key=cfg.key, duration_s=cfg.duration_s,
                      count=cfg.count, seed=seed)
    if isinstance(cfg, ClosedLoopConfig):
        return closed_loop(cfg.outstanding, duration_s=cfg.duration_s, count=cfg.count, seed=seed)
    raise TypeError(f"unknown workload config {type(cfg).__name__}")


# --------------------------------------------------------------------------------------
# Replay data
# --------------------------------------------------------------------------------------


def load_replay(path: str | Path, key: str | None = None) -> np.ndarray:
    """Load replay data points: a ``.npy`` array, or one array of a ``.npz`` archive
    (``key`` names it; None takes the first array stored). Rows (axis 0) are data
    points. Pickled object arrays are refused (allow_pickle=False)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            if not z.files:
                raise ValueError(f"{p}: empty .npz archive")
            name = z.files[0] if key is None else key
            if name not in z.files:
                raise KeyError(f"{p}: no array {name!r} (has {z.files})")
            arr = z[name]
    else:
        raise ValueError(f"replay file must be .npy or .npz: {p}")
    arr = np.asarray(arr)
    if arr.ndim == 0 or len(arr) == 0:
        raise ValueError(f"{p}: replay data needs at least one row")
    return arr


def replay_batch(data: np.ndarray, batch_size: int, index: int) -> np.ndarray:
    """Batch number ``index``: rows ``index·batch_size … index·batch_size+batch_size−1``
    of ``data`` modulo len(data) (cyclic), shape (batch_size, *data.shape[1:])."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    n = len(data)
    start = (index * batch_size) % n
    if start + batch_size <= n:
        return data[start:start + batch_size]
    return np.take(data, np.arange(start, start + batch_size), axis=0, mode="wrap")


def iter_replay_batches(data: np.ndarray, batch_size: int, start: int = 0) -> Iterator[np.ndarray]:
    """Endless iterator of batches of ``batch_size`` rows, cycling through ``data``
    (the row after the last is the first); batch k equals ``replay_batch(data, batch_size, start + k)``."""
    i = start
    while True:
        yield replay_batch(data, batch_size, i)
        i += 1


# --------------------------------------------------------------------------------------
# Synthetic tensors
# --------------------------------------------------------------------------------------


def synthetic_pool(shape_per_item: Sequence[int], dtype: Any, batch_size: int,
                   pool_size: int, seed: int = 0,
                   int_range: tuple[int, int] | None = None) -> np.ndarray:
    """Seeded pool of ready-made batches, shape ``(pool_size, batch_size, *shape_per_item)``.

    Build it before the timed path and reuse batches cyclically (``pool[i % pool_size]``
    or :func:`cycle_pool`). Values:

    * floating dtypes: uniform in [0, 1);
    * integer dtypes: uniform integers in ``[low, high)`` = ``int_range``; default
      ``[0, min(256, dtype max + 1))`` (byte-like values, valid as small indices);
    * bool: fair coin.

    The same arguments give the same pool.
    """
    dt = np.dtype(dtype)
    shape = (int(pool_size), int(batch_size), *[int(s) for s in shape_per_item])
    if pool_size < 1 or batch_size < 1 or any(s < 0 for s in shape[2:]):
        raise ValueError("pool_size and batch_size must be >= 1, item dims >= 0")
    rng = np.random.default_rng(seed)
    if dt == np.bool_:
        return rng.integers(0, 2, size=shape, dtype=np.uint8).astype(np.bool_)
    if np.issubdtype(dt, np.floating):
        if dt in (np.float32, np.float64):
            return rng.random(size=shape, dtype=dt)
        # float16 etc: draw float32 and keep strictly below 1 after the cast
        x = rng.random(size=shape, dtype=np.float32).astype(dt)
        return np.minimum(x, np.nextafter(dt.type(1), dt.type(0)))
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        if int_range is None:
            low, high = 0, min(256, int(info.max) + 1)
        else:
            low, high = int(int_range[0]), int(int_range[1])
        if not (info.min <= low < high <= int(info.max) + 1):
            raise ValueError(f"int_range {low, high} invalid for {dt}")
        return rng.integers(low, high, size=shape, dtype=dt, endpoint=False)
    raise TypeError(f"unsupported dtype for synthetic data: {dt}")


def cycle_pool(pool: np.ndarray, start: int = 0) -> Iterator[np.ndarray]:
    """Endless iterator over ``pool[start], pool[start+1], …`` wrapping at len(pool)."""
    n = len(pool)
    i = start % n
    while True:
        yield pool[i]
        i = (i + 1) % n
