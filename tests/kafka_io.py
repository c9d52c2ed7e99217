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


def read_records(bootstrap: str, topic: str, n: int, timeout_s: float = 120, settle_s: float = 0.0) -> list:
    """Every record of ``topic`` from the start, once ``n`` are there (then ``settle_s`` more to catch
    extras such as redeliveries)."""
    c = Consumer(consumer_config(bootstrap, f"t-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out += [m for m in c.consume(100, timeout=0.2) if not m.error()]
    end = time.monotonic() + settle_s
    while time.monotonic() < end:
        out += [m for m in c.consume(100, timeout=0.2) if not m.error()]
    c.close()
    return out


def read_scored(bootstrap: str, topic: str, n: int, timeout_s: float = 120, settle_s: float = 0.0) -> list:
    """The ScoredBatches of ``topic`` (duplicates kept), as :func:`read_records`."""
    codec = get_codec("protobuf")
    return [codec.decode_scored(m.value(), m.headers())
            for m in read_records(bootstrap, topic, n, timeout_s, settle_s)]
