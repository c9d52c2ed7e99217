"""Workload schedules: when the generator sends each batch (pure, seeded, Kafka-free).

:func:`build_schedule` turns a workload config (services.generator.workload_configs) into a
:class:`Schedule`; the plain constructors (:func:`constant`, :func:`poisson`, :func:`bursty`,
:func:`ramp`, :func:`replay`, :func:`closed_loop`) build one directly.

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

A *replay* workload's timing is a constant-rate schedule (``rate`` batches/s), exactly like
``constant``; only its payload comes from the file (crayfish.payloads).

Adding an arrival process: a deterministic rate curve is a :class:`RateSchedule` with its
piecewise-linear rate segments (see :func:`ramp`), anything else a :class:`Schedule` subclass in
services.generator.arrivals implementing ``iter_chunks``, ``expected_count`` and ``rate_at``;
then a constructor function here and its branch in :func:`build_schedule`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from services.generator.arrivals import ClosedLoopSchedule, PoissonSchedule, RateSchedule, ReplaySchedule
from services.generator.schedule_base import DEFAULT_CHUNK, NS_PER_S, Schedule
from services.generator.workload_configs import (BurstyConfig, ClosedLoopConfig, ConstantConfig, PoissonConfig,
                                                 RampConfig, ReplayConfig, parse_workload)

__all__ = ["Schedule", "RateSchedule", "PoissonSchedule", "ReplaySchedule", "ClosedLoopSchedule", "constant",
           "poisson", "bursty", "ramp", "replay", "closed_loop", "build_schedule", "NS_PER_S", "DEFAULT_CHUNK"]


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
