"""Workloads of the generator, in one import: what the runner and the experiment schema use.

The parts live by concern:

- services.generator.workload_configs: the configs (``WorkloadConfig``, ``parse_workload``, ...);
- services.generator.schedules: when each batch is sent (``build_schedule``, ``Schedule``, the
  constructors), with the arrival processes in services.generator.arrivals;
- crayfish.payloads: what each batch carries (synthetic pools, replayed files); it sits below the
  services because the workers' standalone jobs rebuild the same payloads.

This module only re-exports them, so ``from services.generator.workloads import ...`` keeps
working for every name it always had. New code imports from the module that owns the name.
"""

from __future__ import annotations

from crayfish.payloads import cycle_pool, iter_replay_batches, load_replay, replay_batch, synthetic_pool
from services.generator.schedules import (ClosedLoopSchedule, PoissonSchedule, RateSchedule, ReplaySchedule,
                                          Schedule, build_schedule, bursty, closed_loop, constant, poisson, ramp,
                                          replay)
from services.generator.workload_configs import (PAPER_BURST_BASE_FRACTION, PAPER_BURST_BASE_S,
                                                 PAPER_BURST_PEAK_FRACTION, PAPER_BURST_S, WORKLOAD_ADAPTER,
                                                 BurstyConfig, ClosedLoopConfig, ConstantConfig, PoissonConfig,
                                                 RampConfig, ReplayConfig, WorkloadConfig, bursty_from_sustainable,
                                                 parse_workload)

__all__ = [
    "ConstantConfig", "PoissonConfig", "BurstyConfig", "ClosedLoopConfig", "RampConfig", "ReplayConfig",
    "WorkloadConfig", "WORKLOAD_ADAPTER", "parse_workload", "build_schedule", "bursty_from_sustainable",
    "Schedule", "RateSchedule", "PoissonSchedule", "ReplaySchedule", "ClosedLoopSchedule",
    "constant", "poisson", "bursty", "ramp", "replay", "closed_loop",
    "load_replay", "replay_batch", "iter_replay_batches", "synthetic_pool", "cycle_pool",
    "PAPER_BURST_BASE_FRACTION", "PAPER_BURST_PEAK_FRACTION", "PAPER_BURST_BASE_S", "PAPER_BURST_S",
]
