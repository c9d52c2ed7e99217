"""Shared pieces of the benchmarks: settings, host facts, Kafka helpers, JSON cleanup."""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Iterable

import numpy as np

SEED = 42
PARTS = ("efficiency", "parallelism", "harness", "codec")


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

    @classmethod
    def quick_preset(cls) -> "BenchSettings":
        return cls(quick=True, drain_n=2_000, ort_calls=2_000, ort_warmup_calls=100, gen_duration_s=2.0,
                   max_gen_processes=1, collector_n=3_000, point_duration_s=2.0, max_points=1,
                   base_point_s=1.0, min_point_duration_s=0.5, min_point_count=10, protobuf_reps=5,
                   json_reps=1)

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
    from services.runner import manifest

    return {**manifest.host_facts(), "versions": manifest.package_versions(), "git": manifest.git_state()}


# ----------------------------------------------------------------------------------------------
# Kafka helpers
# ----------------------------------------------------------------------------------------------


def prefill(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]],
            partition: int | None = None) -> int:
    """Produce ``(key, value)`` records as fast as the client allows (linger for big batches);
    returns how many were acknowledged. Raises when any delivery failed."""
    from confluent_kafka import Producer

    from crayfish.kafka import producer_config

    p = Producer(producer_config(bootstrap, **{"linger.ms": 20, "batch.size": 4_000_000,
                                               "queue.buffering.max.messages": 1_000_000,
                                               "client.id": "bench-prefill"}))
    acked, failed = [0], []

    def cb(err, _msg):
        if err is None:
            acked[0] += 1
        else:
            failed.append(str(err))

    kw = {} if partition is None else {"partition": partition}
    for key, value in records:
        while True:
            try:
                p.produce(topic, value, key, on_delivery=cb, **kw)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    remaining = p.flush(120)
    if failed or remaining:
        raise RuntimeError(f"pre-fill of {topic}: {len(failed)} failed, {remaining} not delivered "
                           f"({failed[:3]})")
    return acked[0]


class TopicCounter:
    """Records appended to topics so far (sum of high watermarks), from one long-lived client."""

    def __init__(self, bootstrap: str, topics: list[str]):
        from confluent_kafka import Consumer, TopicPartition

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


