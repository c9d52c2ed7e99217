"""Shared pieces of the benchmarks: settings, host facts, Kafka helpers, JSON cleanup."""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Iterable

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

from crayfish.kafka import produce, producer_config
from services.runner import manifest
from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment

SEED = 42
PARTS = ("efficiency", "parallelism", "harness", "codec", "serving", "tracing", "flink_standalone", "contract")


@dataclass
class BenchSettings:
    """Every knob of a bench run (all of it lands in bench.json under ``settings``)."""

    quick: bool = False
    parts: tuple[str, ...] = PARTS
    seed: int = SEED
    # 1. worker efficiency
    drain_n: int = 30_000              # records pre-filled into the input topic
    ort_calls: int = 20_000            # bare ONNX Runtime calls per timing loop
    ort_warmup_calls: int = 500
    # the engines that drain the same input (kafka: the baseline, whose ratio has the goal; go: the
    # native ceiling the Python engines are judged against)
    efficiency_engines: tuple[str, ...] = ("kafka", "go")
    # 2. harness headroom
    worker_rate: float = 1500.0        # fallback "sustainable rate" when part 3 did not give one
    headroom_factor: float = 5.0       # R_gen = factor x sustainable rate; goal for the collector too
    gen_duration_s: float = 10.0
    max_gen_processes: int = 4
    collector_n: int = 60_000
    # 3. parallelism
    point_duration_s: float = 8.0
    precision: float = 0.1
    max_points: int = 8
    base_point_s: float = 2.0          # closed-loop base point of each experiment
    sleep_delay_ms: float = 10.0
    sleep_start_rate: float = 50.0     # mp 1; mp 2 starts at twice this
    onnx_start_rate: float | None = None  # None: a third of the drain rate of part 1 (else 500)
    min_point_duration_s: float = 3.0  # validity of a point (experiment default)
    min_point_count: int = 50
    # 4. codec
    codec_batch: int = 8
    protobuf_reps: int = 30
    json_reps: int = 3
    # 5. serving (our Scoring gRPC server)
    serving_unary_calls: int = 3_000         # timed sequential unary calls (and embedded calls)
    serving_unary_warmup: int = 200
    serving_load_in_flight: int = 64         # open load: native async calls kept outstanding
    serving_load_duration_s: float = 4.0     # measured seconds of each open load
    serving_load_warmup_s: float = 1.0       # untimed seconds of load before it
    serving_batch_max_size: int = 32         # dynamic batching "on"
    serving_batch_max_queue_delay_us: int = 500
    serving_batch_sleep_delay_ms: float | None = 2.0  # also an open load on a sleep server (None: skip)
    serving_sleep_delay_ms: float = 5.0      # external sleep server for blocking vs pipelined
    serving_sleep_instances: int = 8
    serving_max_in_flight: int = 8           # pipelined calls outstanding per worker instance
    serving_point_duration_s: float = 5.0    # x 0.75 (warm-up cut) must be >= min_point_duration_s
    serving_sleep_accuracy_calls: int = 200  # timed calls of the sleep backend per delay (5d)
    # 6. tracing cost
    tracing_drain_n: int = 20_000            # records per drain (one drain per setting and round)
    tracing_rounds: int = 3                  # interleaved rounds of off / 100 % / 1 %
    # 7. Flink with Kafka in the loop vs the same job with an in-job source and sink
    flink_count: int = 40_000                # batches per mode and repeat
    flink_repeat: int = 3
    serving_max_points: int = 4
    serving_sleep_start_rate: float = 80.0   # blocking search; pipelined starts at factor x its result
    serving_onnx_start_rate: float = 400.0
    serving_sleep_pipelined_start_factor: float = 4.0
    serving_onnx_pipelined_start_factor: float = 1.0

    @classmethod
    def quick_preset(cls) -> "BenchSettings":
        return cls(quick=True, drain_n=2_000, ort_calls=2_000, ort_warmup_calls=100, gen_duration_s=2.0,
                   max_gen_processes=1, collector_n=3_000, point_duration_s=2.0, max_points=1,
                   base_point_s=1.0, min_point_duration_s=0.5, min_point_count=10, protobuf_reps=5,
                   json_reps=1, serving_unary_calls=300, serving_unary_warmup=50, serving_load_duration_s=1.0,
                   serving_load_warmup_s=0.2, serving_point_duration_s=1.0, serving_max_points=1,
                   serving_sleep_accuracy_calls=20,
                   tracing_drain_n=2_000, tracing_rounds=1, flink_count=3_000, flink_repeat=1)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["parts"] = list(self.parts)
        return d

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


# ----------------------------------------------------------------------------------------------
# host facts
# ----------------------------------------------------------------------------------------------


def host_facts() -> dict:
    """The runner's host facts plus package versions and git state (services.runner.manifest)."""

    return {**manifest.host_facts(), "versions": manifest.package_versions(), "git": manifest.git_state()}


# ----------------------------------------------------------------------------------------------
# Kafka helpers
# ----------------------------------------------------------------------------------------------


def prefill(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]],
            partition: int | None = None) -> int:
    """Produce ``(key, value)`` records as fast as the client allows (linger for big batches);
    returns how many were acknowledged. Raises when any delivery failed."""


    p = Producer(producer_config(bootstrap, **{"linger.ms": 20, "batch.size": 4_000_000,
                                               "queue.buffering.max.messages": 1_000_000,
                                               "client.id": "bench-prefill"}))
    acked, failed = [0], []

    def cb(err, _msg):
        if err is None:
            acked[0] += 1
        else:
            failed.append(str(err))

    for key, value in records:
        produce(p, topic, value, key, on_delivery=cb, partition=partition)
        p.poll(0)
    remaining = p.flush(120)
    if failed or remaining:
        raise RuntimeError(f"pre-fill of {topic}: {len(failed)} failed, {remaining} not delivered "
                           f"({failed[:3]})")
    return acked[0]


class TopicCounter:
    """Records appended to topics so far (sum of high watermarks), from one long-lived client."""

    def __init__(self, bootstrap: str, topics: list[str]):
        self._c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-counter",
                            "enable.auto.commit": False})
        self._parts = []
        for t in topics:
            md = self._c.list_topics(t, timeout=10)
            self._parts += [TopicPartition(t, p) for p in md.topics[t].partitions]

    def count(self) -> int:
        total = 0
        for tp in self._parts:
            _, high = self._c.get_watermark_offsets(tp, timeout=5, cached=False)
            total += high
        return total

    def close(self) -> None:
        self._c.close()


def wait_until(pred: Callable[[], bool], timeout_s: float, interval_s: float = 0.02,
               check: Callable[[], None] | None = None, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if pred():
            return
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f}s")
        time.sleep(interval_s)


# ----------------------------------------------------------------------------------------------
# sustainable-throughput searches (parts 3 and 5)
# ----------------------------------------------------------------------------------------------


def search_experiment(name: str, serving: dict, parallelism: int, start_rate: float, bootstrap: str,
                      s: BenchSettings, point_duration_s: float | None = None, max_points: int | None = None):
    """The bench's search Experiment (kafka engine, FFNN, batch size 1, protobuf, constant workload,
    a short closed-loop base point) for ``serving`` (an experiment's ``serving:`` section)."""

    return Experiment.model_validate({
        "name": name, "model": "ffnn", "engine": "kafka", "serving": serving, "batch_size": 1,
        "parallelism": parallelism, "codec": "protobuf",
        # base point: unloaded latency (closed loop, one batch outstanding), kept short
        "workload": {"type": "closed_loop", "outstanding": 1, "duration_s": s.base_point_s},
        "warmup": {"fraction": 0.25}, "repetitions": 1,
        "kafka": {"bootstrap": bootstrap, "partitions": 2},
        "search": {"start_rate": float(start_rate), "max_rate": 50_000.0, "precision": s.precision,
                   "point_duration_s": point_duration_s or s.point_duration_s, "workload": "constant",
                   "batch_size": 1, "max_points": max_points or s.max_points},
        "validity": {"min_duration_s": s.min_point_duration_s, "min_count": s.min_point_count,
                     "rate_tolerance": 0.02},
        "seed": s.seed,
    })


def run_search(exp, out_dir, console=None) -> dict:
    """Run a search Experiment (``services.runner.experiments.run_experiment``) into
    ``out_dir / exp.name`` and summarize it for bench.json."""

    summary = run_experiment(exp, out_dir / exp.name, console=console)
    srch = summary.get("search") or {}
    points = summary.get("points", [])
    base = points[0] if points else {}
    tried = []
    for p in points[1:]:
        tried.append({"rate": (p.get("params") or {}).get("rate"), "sustainable": p.get("search_ok"),
                      "output_rate_bps": p.get("output_rate_bps"), "valid": p.get("valid"),
                      "reasons": p.get("reasons"),
                      "not_sustainable_because": (p.get("sustainable") or {}).get("reasons"),
                      "latency_p50_ms": (p.get("latency_ms") or {}).get("p50"),
                      "latency_p99_ms": (p.get("latency_ms") or {}).get("p99"),
                      "generator_achieved_over_target": _gen_ratio(p),
                      "worker_cpu_per_batch_us": (p.get("resources") or {}).get("worker_cpu_per_batch_us")})
    return {"backend": exp.serving.backend, "parallelism": exp.parallelism, "start_rate": exp.search.start_rate,
            "sustainable_rate_bps": summary.get("sustainable_rate"), "upper_bps": srch.get("upper"),
            "status": srch.get("status"), "points_tried": len(tried), "tried": tried,
            "base_point": {"workload": "closed_loop outstanding 1",
                           "latency_p50_ms": (base.get("latency_ms") or {}).get("p50"),
                           "latency_p99_ms": (base.get("latency_ms") or {}).get("p99"),
                           "throughput_bps": base.get("throughput_bps")},
            "wall_s": summary.get("wall_s"), "run_dir": str(out_dir / exp.name),
            "experiment": exp.model_dump(mode="json")}


def _gen_ratio(point: dict):
    g = point.get("generator") or {}
    return ratio(g.get("achieved_rate_bps"), g.get("target_rate_bps"))


def scaling_bounds(a: dict, b: dict) -> list[float] | None:
    """Searches bracket capacities in [sustainable, upper): the bounds of sustainable(b) /
    sustainable(a) that follow from them."""
    lo = ratio(b.get("sustainable_rate_bps"), a.get("upper_bps"))
    hi = ratio(b.get("upper_bps"), a.get("sustainable_rate_bps"))
    return [lo, hi] if lo is not None and hi is not None else None


# ----------------------------------------------------------------------------------------------
# small utilities
# ----------------------------------------------------------------------------------------------


@dataclass
class Timer:
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)


def percentile(values, q: float) -> float:
    a = np.asarray(values, dtype=np.float64)
    return float(np.percentile(a, q)) if a.size else float("nan")


def ratio(a, b) -> float | None:
    try:
        if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
            return None
        return float(a) / float(b)
    except TypeError:
        return None


def error_line(text: str, limit: int = 200) -> str:
    """One line for an error message: its first line and, for a service's traceback, the last
    exception line (``SomeError: ...``) in it."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if not lines:
        return ""
    exc_lines = [ln for ln in lines[1:] if re.match(r"^[A-Za-z_][\w.]*: ", ln)]
    line = lines[0] if not exc_lines else f"{lines[0][:70]} ... {exc_lines[-1]}"
    return line[:limit]


