"""What a workload is: the pydantic configs an experiment names under ``workload:``.

``WorkloadConfig`` is the union of the configs, discriminated on ``type``; :func:`parse_workload`
validates a dict (e.g. from YAML) into one. The arrival process each config describes is built by
services.generator.schedules (:func:`~services.generator.schedules.build_schedule`).

Every workload is bounded by ``duration_s`` (events with intended time < duration_s), by ``count``
(at most that many batches), or both (whichever ends first).

Adding a workload type
----------------------
1. A config class here: subclass ``_WorkloadBase`` with ``type: Literal["<name>"]`` and its fields
   (attribute docstrings become the schema's descriptions), and add it to ``WorkloadConfig``.
2. Its schedule in services.generator.schedules: a constructor function and a branch in
   ``build_schedule``.
3. If it brings its own payload (like ``replay``), the payload goes in
   ``crayfish.payloads.input_pool``, and the generator's BatchFactory passes it the config's fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

__all__ = ["ConstantConfig", "PoissonConfig", "BurstyConfig", "ClosedLoopConfig", "RampConfig", "ReplayConfig",
           "WorkloadConfig", "WORKLOAD_ADAPTER", "parse_workload", "bursty_from_sustainable",
           "PAPER_BURST_BASE_FRACTION", "PAPER_BURST_PEAK_FRACTION", "PAPER_BURST_BASE_S", "PAPER_BURST_S"]

# The Crayfish paper's bursty workload (input-producer of the reference
# implementation): a stable phase at 0.7×ST for 120 s, then a burst at 1.1×ST
# for 30 s, repeating (period 150 s), starting with the stable phase.
PAPER_BURST_BASE_FRACTION = 0.7
PAPER_BURST_PEAK_FRACTION = 1.1
PAPER_BURST_BASE_S = 120.0
PAPER_BURST_S = 30.0


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
    """Replay recorded data points from a .npy/.npz/.parquet file at a constant rate.

    Timing is exactly the constant schedule (batch i at i / rate); only the
    payload comes from the file, batch_size rows per batch, wrapping around.
    """

    type: Literal["replay"] = "replay"
    """Discriminator."""

    path: str
    """Path of a .npy file, a .npz archive (one array per input name for a model with several
    inputs) or a Parquet file (one column per input; a row is a data point, list cells are
    flattened into the item), holding data points along axis 0."""

    key: str | None = None
    """Array name inside a .npz archive (column of a Parquet file); None takes the first. Ignored
    for .npy and for models with several inputs (each takes its own name)."""

    rate: float = Field(gt=0)
    """Batches per second (constant-rate timing)."""

    @model_validator(mode="after")
    def _suffix(self):
        if Path(self.path).suffix.lower() not in (".npy", ".npz", ".parquet"):
            raise ValueError(f"replay path must end in .npy, .npz or .parquet: {self.path!r}")
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
