"""What the checks send to an adapter and read back: protobuf DataBatches of the FFNN, good and bad."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

from crayfish.codec import get_codec
from crayfish.kafka import consumer_config, producer_config
from crayfish.tensor import to_tensor
from crayfish.v1 import batch_pb2

TRACEPARENT = "00-{trace}-{span}-01"
GARBAGE = b"\xff\x00 this is not protobuf"


def make_batch(run_id: str, seq: int, x: np.ndarray, model: str = "ffnn", batch_id: str | None = None):
    now = time.time_ns()
    b = batch_pb2.DataBatch(batch_id=batch_id or f"{run_id}-{seq}", run_id=run_id, sequence=seq,
                            intended_ns=now, created_ns=now, model=model)
    to_tensor(x, b.input)
    return b


def end_offsets(bootstrap: str, topics: list[str]) -> list[TopicPartition]:
    """Where each partition of ``topics`` ends now: reading from there sees only what comes next."""
    c = Consumer(consumer_config(bootstrap, f"conformance-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
    try:
        out = []
        for t in topics:
            for p in c.list_topics(t, timeout=10).topics[t].partitions:
                out.append(TopicPartition(t, p, c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]))
        return out
    finally:
        c.close()


# Once records flow, this long without a new one ends the wait: an adapter that drops records
# fails in seconds, not at the timeout.
IDLE_S = 15.0


def read_from(bootstrap: str, start: list[TopicPartition], until, timeout_s: float, idle_s: float = IDLE_S) -> list:
    """Records after ``start`` until ``until(records)`` holds, ``timeout_s`` passes, or (once some
    came) ``idle_s`` passes without a new one."""
    c = Consumer(consumer_config(bootstrap, f"conformance-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
    c.assign(start)
    out: list = []
    now = time.monotonic()
    deadline, last_new = now + timeout_s, now
    try:
        while not until(out) and now < deadline and not (out and now - last_new > idle_s):
            got = [m for m in c.consume(100, timeout=0.2) if not m.error()]
            now = time.monotonic()
            if got:
                out += got
                last_new = now
    finally:
        c.close()
    return out


@dataclass
class Sent:
    """What one round sent: good inputs by batch id, bad batches by id and the reason they deserve,
    the traced batch and its context."""

    good: dict[str, np.ndarray] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    late_good: set[str] = field(default_factory=set)
    traced_id: str = ""
    trace_id: str = ""
    parent_span: str = ""


def send_round(bootstrap: str, topic: str, run_id: str, partitions: int = 2) -> Sent:
    """Good batches, then a traced one, a record that is not protobuf and three bad batches, then
    good batches again (scoring must go on after bad records)."""
    codec = get_codec("protobuf")
    rng = np.random.default_rng(7)
    p = Producer(producer_config(bootstrap))
    sent = Sent()

    def send(b, partition, headers=None):
        value, h = codec.encode_batch(b)
        p.produce(topic, value, b.batch_id.encode(), partition=partition % partitions,
                  headers=(h or []) + (headers or []) or None)

    for i in range(10):
        x = rng.random((2 if i % 3 else 1, 1, 784), dtype=np.float32)
        sent.good[f"{run_id}-{i}"] = x
        send(make_batch(run_id, i, x), i)
    sent.trace_id, sent.parent_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    sent.traced_id = f"{run_id}-traced"
    x = rng.random((1, 1, 784), dtype=np.float32)
    sent.good[sent.traced_id] = x
    send(make_batch(run_id, 50, x, batch_id=sent.traced_id), 0,
         [("traceparent", TRACEPARENT.format(trace=sent.trace_id, span=sent.parent_span).encode())])
    p.produce(topic, GARBAGE, b"garbage", partition=0)
    bad = {"wrongshape": ("bad_shape", rng.random((1, 1, 783), dtype=np.float32), "ffnn"),
           "wrongdtype": ("bad_dtype", rng.random((1, 1, 784)).astype(np.float64), "ffnn"),
           "unknownmodel": ("unknown_model", rng.random((1, 1, 784), dtype=np.float32), "gpt")}
    for n, (key, (reason, x, model)) in enumerate(bad.items()):
        bid = f"{run_id}-{key}"
        sent.bad[bid] = reason
        send(make_batch(run_id, 100 + n, x, model=model, batch_id=bid), 1)
    for i in range(10, 14):
        x = rng.random((1, 1, 784), dtype=np.float32)
        sent.good[f"{run_id}-{i}"] = x
        sent.late_good.add(f"{run_id}-{i}")
        send(make_batch(run_id, i, x), i)
    p.flush(10)
    return sent


def send_zeros(bootstrap: str, topic: str, run_id: str, n: int, partitions: int = 2) -> set[str]:
    codec = get_codec("protobuf")
    p = Producer(producer_config(bootstrap))
    x = np.zeros((1, 1, 784), dtype=np.float32)
    for i in range(n):
        value, h = codec.encode_batch(make_batch(run_id, i, x))
        p.produce(topic, value, f"{run_id}-{i}".encode(), partition=i % partitions, headers=h or None)
    p.flush(10)
    return {f"{run_id}-{i}" for i in range(n)}
