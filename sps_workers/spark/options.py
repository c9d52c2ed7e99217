"""engine_options of the Spark engine (what each does: the package docstring, sps_workers.spark).

No pyspark import here: the runner validates experiment files in the core environment.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field, field_validator

from sps_workers.options import EngineOptions

# A master URL Spark understands (https://spark.apache.org/docs/latest/submitting-applications.html#master-urls).
_MASTER_PATTERNS = (
    r"local",
    r"local\[(\d+|\*)(,\d+)?\]",            # local[N], local[*], local[N,maxFailures]
    r"local-cluster\[\d+,\d+,\d+\]",        # workers, cores per worker, MB per worker
    r"spark://[^/\s]+:\d+(,[^/\s]+:\d+)*",  # standalone (HA: several masters)
    r"yarn",
    r"k8s://\S+",
)
_LOCAL_N = re.compile(r"local\[(\d+)(,\d+)?\]")


class SparkOptions(EngineOptions):
    ENGINE: ClassVar[str] = "spark"

    master: str | None = Field(None, description="Spark master URL; null = local[mp].")
    trigger_ms: int = Field(0, ge=0, description="Processing-time trigger; 0 = the next micro-batch as soon as "
                                                 "the last one ends.")
    max_offsets_per_trigger: int | None = Field(None, ge=1, description="The Kafka source's maxOffsetsPerTrigger; "
                                                                        "null = everything available.")
    min_partitions: int | None = Field(None, ge=1, description="The Kafka source's minPartitions; null = one "
                                                               "Spark task per Kafka partition.")
    arrow_batch_records: int = Field(32, ge=1, description="Records per Arrow batch, both directions.")
    async_progress: bool = Field(False, description="asyncProgressTrackingEnabled on the Kafka sink.")
    warmup: bool = Field(True, description="Start the Python workers (and their models) before the query.")
    checkpoint_dir: str | None = Field(None, min_length=1, description="Offsets kept here across restarts; "
                                                                       "null = a fresh temp dir, removed at stop.")
    driver_host: str = Field("127.0.0.1", min_length=1, description="Address the driver binds and advertises.")
    stop_timeout_s: float = Field(15.0, gt=0, description="SIGTERM -> wait this long for the running "
                                                          "micro-batch, then stop.")
    conf: dict = Field(default_factory=dict, description="Extra Spark conf (keys spark.*).")

    @field_validator("master")
    @classmethod
    def _master(cls, v):
        if v is not None and not any(re.fullmatch(p, v) for p in _MASTER_PATTERNS):
            raise ValueError(f"must be a Spark master URL: local[N], local[N,maxFailures], local-cluster[w,c,mb], "
                             f"spark://host:port, yarn or k8s://... (got {v!r})")
        return v

    @field_validator("conf")
    @classmethod
    def _spark_keys(cls, v):
        wrong = [k for k in v if not (isinstance(k, str) and k.startswith("spark."))]
        if wrong:
            raise ValueError(f"keys must be Spark conf keys starting with 'spark.' (got {', '.join(map(repr, wrong))})")
        return v

    def check(self, parallelism: int) -> SparkOptions:
        return self if self.master is not None else self.model_copy(update={"master": f"local[{parallelism}]"})

    def spark_conf(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.conf.items()}


def local_cores(master: str) -> int | None:
    """N of local[N] / local[N,F] (None for other masters)."""
    m = _LOCAL_N.fullmatch(master)
    return int(m.group(1)) if m else None
