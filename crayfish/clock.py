"""Bound the offset between a host's wall clock and the broker's clock (LogAppendTime).

A probe record is sent at t0 (host clock) and read back at t1; the broker stamped it with A (ms,
truncated), so the true append instant lies in [A, A + 1 ms) of broker time and in [t0, t1] of host
time. Hence offset = broker − host ∈ [A − t1, A + 1 ms − t0]. Intersecting the intervals of several
probes tightens the bound. Latencies measured as (broker stamp − host stamp) are exact up to it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass

from confluent_kafka import Consumer, Producer, TopicPartition

from crayfish.kafka import consumer_config, producer_config


@dataclass
class SkewBound:
    lower_ms: float
    upper_ms: float
    probes: int
    min_round_trip_ms: float

    @property
    def width_ms(self) -> float:
        return self.upper_ms - self.lower_ms

    def to_dict(self) -> dict:
        d = asdict(self)
        d["width_ms"] = self.width_ms
        d["definition"] = "broker_clock - host_clock lies in [lower_ms, upper_ms]"
        return d


def probe_skew(bootstrap: str, topic: str, probes: int = 10, timeout_s: float = 10.0) -> SkewBound:
    producer = Producer(producer_config(bootstrap, **{"client.id": "skew-probe"}))
    consumer = Consumer(consumer_config(bootstrap, f"skew-probe-{uuid.uuid4().hex[:8]}",
                                        **{"enable.auto.commit": False, "fetch.wait.max.ms": 1}))
    md = consumer.list_topics(topic, timeout=timeout_s)
    parts = list(md.topics[topic].partitions)
    # Start reading at the current end so earlier probes are not mistaken for ours.
    assignment = []
    for p in parts:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        assignment.append(TopicPartition(topic, p, high))
    consumer.assign(assignment)
    lower, upper, rtt = -float("inf"), float("inf"), float("inf")
    try:
        for i in range(probes):
            token = uuid.uuid4().bytes
            t0 = time.time_ns()
            producer.produce(topic, token, partition=parts[0])
            producer.flush(timeout_s)
            deadline = time.monotonic() + timeout_s
            got = None
            while got is None and time.monotonic() < deadline:
                m = consumer.poll(0.01)
                if m is not None and not m.error() and m.value() == token:
                    got = m
            t1 = time.time_ns()
            if got is None:
                continue
            _, a_ms = got.timestamp()
            lower = max(lower, (a_ms * 1_000_000 - t1) / 1e6)
            upper = min(upper, ((a_ms + 1) * 1_000_000 - t0) / 1e6)
            rtt = min(rtt, (t1 - t0) / 1e6)
    finally:
        consumer.close()
    if lower == -float("inf"):
        raise RuntimeError(f"no clock probe came back from topic {topic}")
    return SkewBound(lower_ms=lower, upper_ms=upper, probes=probes, min_round_trip_ms=rtt)
