"""The Spark engine's knobs (``WorkerSettings.engine_options``), checked before anything starts.

Pure Python (no pyspark import): the runner and the core test environment can validate a
configuration without the ``spark`` environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from sps_workers.settings import WorkerSettings


class SparkOptionError(ValueError):
    pass


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


@dataclass(frozen=True)
class SparkOptions:
    """Defaults in brackets; see the package docstring (sps_workers.spark) for what each does."""

    master: str = ""                           # [local[mp]]
    trigger_ms: int = 0                        # [0: next micro-batch as soon as the last one ends]
    max_offsets_per_trigger: int | None = None # [None: everything available]
    min_partitions: int | None = None          # [None: one Spark task per Kafka partition]
    arrow_batch_records: int = 32              # records per Arrow batch, both directions
    async_progress: bool = False               # asyncProgressTrackingEnabled on the Kafka sink
    warmup: bool = True                        # start the Python workers before the query
    checkpoint_dir: str | None = None          # [a fresh temp dir per run, removed at stop]
    driver_host: str = "127.0.0.1"             # address the driver binds and advertises
    stop_timeout_s: float = 15.0               # SIGTERM -> wait for the running micro-batch, then stop
    conf: dict = field(default_factory=dict)   # extra Spark conf (keys spark.*)

    def spark_conf(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.conf.items()}


KNOWN = tuple(f.name for f in fields(SparkOptions))


def parse_options(settings: WorkerSettings) -> SparkOptions:
    """engine_options -> SparkOptions; a bad value raises SparkOptionError naming the field."""
    raw = dict(settings.engine_options or {})
    unknown = sorted(set(raw) - set(KNOWN))
    if unknown:
        raise SparkOptionError(f"engine_options: unknown key(s) {', '.join(map(repr, unknown))} for engine "
                               f"spark; known: {', '.join(KNOWN)}")

    def bad(name: str, why: str):
        return SparkOptionError(f"engine_options.{name}: {why} (got {raw[name]!r})")

    def integer(name: str, low: int, optional: bool = False):
        if name not in raw or (optional and raw[name] is None):
            return None
        v = raw[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise bad(name, f"must be an integer >= {low}" + (" or null" if optional else ""))
        return v

    def boolean(name: str):
        if name not in raw:
            return None
        if not isinstance(raw[name], bool):
            raise bad(name, "must be true or false")
        return raw[name]

    out: dict = {}
    master = raw.get("master")
    if master is None:
        master = f"local[{settings.parallelism}]"
    elif not isinstance(master, str) or not any(re.fullmatch(p, master) for p in _MASTER_PATTERNS):
        raise bad("master", "must be a Spark master URL: local[N], local[N,maxFailures], local-cluster[w,c,mb], "
                            "spark://host:port, yarn or k8s://...")
    out["master"] = master
    for name, low in (("trigger_ms", 0), ("arrow_batch_records", 1)):
        v = integer(name, low)
        if v is not None:
            out[name] = v
    for name in ("max_offsets_per_trigger", "min_partitions"):
        v = integer(name, 1, optional=True)
        if v is not None:
            out[name] = v
    for name in ("async_progress", "warmup"):
        v = boolean(name)
        if v is not None:
            out[name] = v
    for name in ("checkpoint_dir", "driver_host"):
        if name in raw and raw[name] is not None:
            if not isinstance(raw[name], str) or not raw[name].strip():
                raise bad(name, "must be a non-empty string")
            out[name] = raw[name]
    if "stop_timeout_s" in raw:
        v = raw["stop_timeout_s"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise bad("stop_timeout_s", "must be a number > 0")
        out["stop_timeout_s"] = float(v)
    if "conf" in raw:
        conf = raw["conf"]
        if not isinstance(conf, dict):
            raise bad("conf", "must be a mapping of Spark conf keys (spark.*) to values")
        wrong = [k for k in conf if not (isinstance(k, str) and k.startswith("spark."))]
        if wrong:
            raise SparkOptionError(f"engine_options.conf: keys must be Spark conf keys starting with 'spark.' "
                                   f"(got {', '.join(map(repr, wrong))})")
        out["conf"] = dict(conf)
    return SparkOptions(**out)


def local_cores(master: str) -> int | None:
    """N of local[N] / local[N,F] (None for other masters)."""
    m = _LOCAL_N.fullmatch(master)
    return int(m.group(1)) if m else None
