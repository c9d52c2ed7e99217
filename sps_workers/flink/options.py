"""engine_options of the flink engine (what each does: the package docstring).

No PyFlink import here: the runner validates experiment files in the core environment.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from sps_workers.options import EngineOptions


class FlinkOptions(EngineOptions):
    ENGINE: ClassVar[str] = "flink"

    jobmanager: str | None = Field(
        None, description="host:port of a running Flink cluster's REST endpoint (JobManager); "
                          "None = a local mini-cluster inside the worker process.")
    operator_parallelism: list[int] | None = Field(
        None, description="[source, scoring, sink] parallelism with operator chaining disabled "
                          "(the paper's [32-N-32]); None = every operator at mp, chained.")
    checkpoint_interval_ms: int = Field(
        1000, ge=100, description="Checkpoint interval: the Kafka sink flushes and the source commits "
                                  "its offsets on every checkpoint (at-least-once).")
    bundle_size: int = Field(
        1000, ge=1, description="python.fn-execution.bundle.size: records buffered for the Python worker "
                               "before a bundle is finished.")
    bundle_time_ms: int = Field(
        5, ge=1, description="python.fn-execution.bundle.time: longest wait before a bundle is finished "
                             "(bounds the added latency at low rates).")
    buffer_timeout_ms: int = Field(
        5, ge=0, description="execution.buffer-timeout.interval: longest time a record waits in a network "
                             "buffer between operators that are not chained (operator_parallelism); Flink's "
                             "default 100 ms added ~200 ms to every record of a [1-2-1] job here. 0 = flush "
                             "after every record.")
    sink_linger_ms: int = Field(
        0, ge=0, description="linger.ms of the Kafka sink's producer: 0 sends every record at once (the "
                             "baseline's setting); a few ms batch more records per request (less CPU).")
    stop_timeout_s: float = Field(
        5.0, gt=0, description="How long stop-with-savepoint may take on SIGTERM before the job is cancelled.")
    config: dict[str, str] = Field(
        default_factory=dict, description="Extra Flink configuration keys (strings), applied last.")

    @field_validator("jobmanager")
    @classmethod
    def _host_port(cls, v):
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {v!r}")
        return v

    @field_validator("operator_parallelism")
    @classmethod
    def _three(cls, v):
        if v is None:
            return v
        if len(v) != 3 or any(p < 1 for p in v):
            raise ValueError(f"expected [source, scoring, sink], each >= 1, got {v!r}")
        return v

    def check(self, parallelism: int) -> FlinkOptions:
        if self.operator_parallelism is not None and self.operator_parallelism[1] != parallelism:
            raise self.error("operator_parallelism", f"the scoring entry ({self.operator_parallelism[1]}) must "
                                                     f"equal parallelism ({parallelism})")
        return self

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.jobmanager.rpartition(":")
        return host, int(port)

    def parallelisms(self, mp: int) -> tuple[int, int, int]:
        """(source, scoring, sink); the scoring value is the one that counts as mp."""
        if self.operator_parallelism is None:
            return mp, mp, mp
        return tuple(self.operator_parallelism)

