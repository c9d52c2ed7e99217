"""Produce DataBatches and read topics back: the few lines every engine test needs (real broker)."""

from __future__ import annotations

import time
import uuid

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

from crayfish.codec import get_codec
from crayfish.kafka import consumer_config, producer_config
from crayfish.tensor import to_tensor
from crayfish.v1 import batch_pb2


def make_batch(run_id: str, seq: int, x: np.ndarray | None = None, model: str = "ffnn") -> batch_pb2.DataBatch:
    now = time.time_ns()
    b = batch_pb2.DataBatch(batch_id=f"{run_id}-{seq}", run_id=run_id, sequence=seq, intended_ns=now,
                            created_ns=now, model=model)
    to_tensor(np.zeros((1, 1, 784), dtype=np.float32) if x is None else x, b.input)
    return b


def send_batches(bootstrap: str, topic: str, run_id: str, seqs, partitions: int = 2) -> None:
    """FFNN batches of zeros ``run_id-<seq>``, keyed by batch id, on partition seq % partitions."""
    codec = get_codec("protobuf")
    p = Producer(producer_config(bootstrap))
    for i in seqs:
        value, h = codec.encode_batch(make_batch(run_id, i))
        p.produce(topic, value, f"{run_id}-{i}".encode(), partition=i % partitions, headers=h or None)
    p.flush(10)


def read_records(bootstrap: str, topic: str, n: int, timeout_s: float = 120) -> list:
    """Every record of ``topic`` from the start, once at least ``n`` are there (or the timeout).

    At least: to see that nothing more comes (no late duplicate, no redelivery), stop the worker or
    wait for its group's commits (:func:`wait_committed`), then :func:`read_to_end`."""
    c = Consumer(consumer_config(bootstrap, f"t-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out += [m for m in c.consume(100, timeout=0.2) if not m.error()]
    c.close()
    return out


def read_scored(bootstrap: str, topic: str, n: int, timeout_s: float = 120) -> list:
    """The ScoredBatches of ``topic`` (duplicates kept), as :func:`read_records`."""
    codec = get_codec("protobuf")
    return [codec.decode_scored(m.value(), m.headers()) for m in read_records(bootstrap, topic, n, timeout_s)]


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """``{partition: high-water mark}`` of ``topic``: the offset the next record will get."""
    c = Consumer(consumer_config(bootstrap, f"t-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
    try:
        md = c.list_topics(topic, timeout=10)
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in sorted(md.topics[topic].partitions)}
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """``{partition: offset}`` that ``group`` has committed on ``topic`` (negative: nothing yet)."""
    c = Consumer(consumer_config(bootstrap, group, **{"enable.auto.commit": False}))
    try:
        md = c.list_topics(topic, timeout=10)
        got = c.committed([TopicPartition(topic, p) for p in md.topics[topic].partitions], timeout=10)
        return {tp.partition: tp.offset for tp in sorted(got, key=lambda tp: tp.partition)}
    finally:
        c.close()


def wait_committed(bootstrap: str, group: str, topic: str, offsets: dict[int, int] | None = None,
                   timeout_s: float = 120) -> dict[int, int]:
    """Wait until ``group`` has committed ``offsets`` on ``topic`` (default: its high-water marks
    now, i.e. everything in it was consumed and, at least once, delivered); returns them. Fails
    with what was committed when that does not happen within ``timeout_s``."""
    want = end_offsets(bootstrap, topic) if offsets is None else dict(offsets)
    deadline = time.monotonic() + timeout_s
    got = committed_offsets(bootstrap, group, topic)
    while got != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group} committed {got} on {topic} within {timeout_s:.0f} s, "
                                 f"expected {want}")
        time.sleep(0.2)
        got = committed_offsets(bootstrap, group, topic)
    return got


def read_to_end(bootstrap: str, topic: str, timeout_s: float = 60) -> list:
    """Every record of ``topic`` from the start up to its high-water marks taken now: the whole
    topic once the writers are done (stopped, or committed up to the end of their input), so a
    duplicate or a late extra written before cannot go unseen."""
    ends = end_offsets(bootstrap, topic)
    c = Consumer(consumer_config(bootstrap, f"t-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
    try:
        todo = {p: end for p, end in ends.items() if end > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        out = []
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: could not read up to the high-water marks {ends} within "
                                     f"{timeout_s:.0f} s; still to read: {todo}")
            for m in c.consume(500, timeout=0.2):
                if m.error() or m.partition() not in todo or m.offset() >= todo[m.partition()]:
                    continue
                out.append(m)
            # position(): the next offset to fetch (past transaction markers too)
            for tp in c.position([TopicPartition(topic, p) for p in todo]):
                if tp.offset >= todo[tp.partition]:
                    del todo[tp.partition]
        return out
    finally:
        c.close()


def read_scored_to_end(bootstrap: str, topic: str, timeout_s: float = 60) -> list:
    """The ScoredBatches of ``topic`` up to its high-water marks (duplicates kept), as :func:`read_to_end`."""
    codec = get_codec("protobuf")
    return [codec.decode_scored(m.value(), m.headers()) for m in read_to_end(bootstrap, topic, timeout_s)]


def read_topics(bootstrap, topics, until, timeout_s=120):
    """Read the topics from the start until ``until(messages)`` holds (or the timeout)."""
    c = Consumer(consumer_config(bootstrap, f"t-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
    parts = []
    for t in topics:
        md = c.list_topics(t, timeout=10)
        parts += [TopicPartition(t, p, 0) for p in md.topics[t].partitions]
    c.assign(parts)
    out = []
    deadline = time.monotonic() + timeout_s
    while not until(out) and time.monotonic() < deadline:
        out += [m for m in c.consume(100, timeout=0.2) if not m.error()]
    c.close()
    return out
