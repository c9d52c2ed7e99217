"""Broker-facing helpers every Python service shares: client settings, run topics, headers, and the
clock-skew probes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from crayfish.clock import SkewBound, combine
from crayfish.kafka_client import KafkaClient, client_properties

POLL_S = 0.05  # readiness polling interval
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class TopicsError(RuntimeError):
    """The cluster refused a run's topics (one line, the broker's reason)."""


@dataclass(frozen=True)
class RunTopics:
    """The fresh topics of one run: input (generator -> worker), output (worker -> collector),
    dead-letter (worker -> collector), probe (clock-skew round trips)."""

    input: str
    output: str
    dead_letter: str
    probe: str

    @classmethod
    def for_run(cls, run_id: str) -> "RunTopics":
        base = f"crayfish-{run_id}"
        return cls(f"{base}-input", f"{base}-output", f"{base}-dlq", f"{base}-probe")

    def all(self) -> list[str]:
        return [self.input, self.output, self.dead_letter, self.probe]


# librdkafka logs info-level chatter (e.g. "Purging unserved events" when a client closes) to
# stderr; warnings and errors still come through.
CLIENT_LOG_LEVEL = 4


def admin_config(bootstrap: str, client: KafkaClient | None = None) -> dict:
    """Settings of a one-off client (admin calls, metadata, offsets): the cluster's client
    properties (security) over the defaults."""
    return {"bootstrap.servers": bootstrap, "log_level": CLIENT_LOG_LEVEL, **client_properties(client)}


def producer_config(bootstrap: str, client: KafkaClient | None = None, **overrides) -> dict:
    """Low-latency producer settings: no linger (the paper measures per-event latency), acks=all,
    idempotent (no duplicates from retries), big messages allowed."""
    conf = {
        **admin_config(bootstrap),
        "linger.ms": 0,
        "acks": "all",
        "enable.idempotence": True,
        "message.max.bytes": MAX_MESSAGE_BYTES,
        "compression.type": "none",
        "socket.nagle.disable": True,
    }
    conf.update(client_properties(client))
    conf.update(overrides)
    return conf


def consumer_config(bootstrap: str, group_id: str, client: KafkaClient | None = None, **overrides) -> dict:
    """Consumer settings for workers and the collector: read from the start of fresh topics,
    short session timeouts so joins are fast, no fetch wait when data is there."""
    conf = {
        **admin_config(bootstrap),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 200,
        # Long enough that a broker slowed down by an overloaded 2-core host keeps the session.
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "fetch.wait.max.ms": 5,
        "fetch.max.bytes": MAX_MESSAGE_BYTES,
        "max.partition.fetch.bytes": MAX_MESSAGE_BYTES,
        "receive.message.max.bytes": MAX_MESSAGE_BYTES + 1024 * 1024,
        "socket.nagle.disable": True,
        "enable.partition.eof": False,
    }
    conf.update(client_properties(client))
    conf.update(overrides)
    return conf


def produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None = None, *, headers=None,
            on_delivery=None, partition: int | None = None, wait_s: float = 0.01) -> None:
    """``producer.produce(...)``, waiting while the client's queue is full (``BufferError``) and
    serving delivery reports meanwhile: a record is never dropped for want of room."""
    kw = {"on_delivery": on_delivery, "headers": headers or None}
    if partition is not None:
        kw["partition"] = partition
    while True:
        try:
            producer.produce(topic, value, key, **kw)
            return
        except BufferError:
            producer.poll(wait_s)


def create_topics(bootstrap: str, topics: RunTopics, partitions: int = 2, timeout_s: float = 30.0,
                  only: list[str] | None = None, client: KafkaClient | None = None,
                  replication_factor: int = 1, configs: dict[str, str] | None = None) -> None:
    """Create the run's topics (``only``: those of them), LogAppendTime on all of them (the broker
    stamps both ends of the worker hop), a message size limit large enough for ResNet50 batches,
    and the user's ``configs`` (e.g. ``min.insync.replicas``) over those."""
    admin = AdminClient(admin_config(bootstrap, client))
    config = {"message.timestamp.type": "LogAppendTime", "max.message.bytes": str(MAX_MESSAGE_BYTES),
              **{k: str(v) for k, v in (configs or {}).items()}}
    names = only if only is not None else topics.all()
    new = [NewTopic(t, num_partitions=partitions if t in (topics.input, topics.output) else 1,
                    replication_factor=replication_factor, config=config) for t in names]
    futures = admin.create_topics(new, request_timeout=timeout_s)
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
        except KafkaException as exc:
            reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
            raise TopicsError(f"could not create topic {name}: {reason}") from None
    _wait_topics_visible(admin, names, timeout_s)


def _wait_topics_visible(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=5)
        if all(n in md.topics and not md.topics[n].error and md.topics[n].partitions
               and all(p.leader >= 0 for p in md.topics[n].partitions.values()) for n in names):
            return
        time.sleep(POLL_S)
    raise RuntimeError(f"topics not ready after {timeout_s}s: {names}")


def delete_topics(bootstrap: str, topics: RunTopics, timeout_s: float = 30.0, only: list[str] | None = None,
                  client: KafkaClient | None = None) -> None:
    admin = AdminClient(admin_config(bootstrap, client))
    futures = admin.delete_topics(only if only is not None else topics.all(), request_timeout=timeout_s)
    for fut in futures.values():
        try:
            fut.result(timeout=timeout_s)
        except KafkaException:
            pass


def high_watermark(consumer, topic: str, partition: int, timeout_s: float = 10.0) -> int:
    """The partition's high-water mark. Retries while the broker answers "not leader" or times out:
    a freshly created topic shows a leader in the metadata a moment before that broker serves it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s,
                                                  cached=False)[1]
        except KafkaException as exc:
            if exc.args[0].code() not in _NOT_SERVED_YET or time.monotonic() > deadline:
                raise
            time.sleep(POLL_S)


# A new partition's leader answers these until it serves the partition (librdkafka does not flag
# them retriable on a one-off request such as a watermark query).
_NOT_SERVED_YET = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                   KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT}


def consumer_lag(bootstrap: str, group_id: str, topic: str, timeout_s: float = 5.0,
                 client: KafkaClient | None = None) -> int:
    """Committed-offset lag of a consumer group on a topic (sum over partitions)."""
    c = Consumer({**admin_config(bootstrap, client), "group.id": group_id, "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=timeout_s)
        parts = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
        committed = c.committed(parts, timeout=timeout_s)
        lag = 0
        for tp in committed:
            _, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout_s)
            lag += high - (tp.offset if tp.offset >= 0 else 0)
        return lag
    finally:
        c.close()


def poll_batch(consumer, max_records: int, timeout_s: float) -> list:
    """Up to ``max_records`` messages, returning as soon as at least one is there.

    ``Consumer.consume(n, timeout)`` waits until it has n messages or the timeout passes, which
    would add up to ``timeout`` of batching delay per record at low rates. Here: take what is
    queued without waiting; if nothing is, wait for one message, then take what is queued."""
    msgs = consumer.consume(num_messages=max_records, timeout=0)
    if msgs:
        return msgs
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    if max_records > 1:
        rest = consumer.consume(num_messages=max_records - 1, timeout=0)
        if rest:
            return [first, *rest]
    return [first]


# --------------------------------------------------------------------- clock-skew probes


def probe_skew(bootstrap: str, topic: str, probes: int = 10, timeout_s: float = 10.0,
               clock: Callable[[], int] = time.time_ns, client: KafkaClient | None = None) -> SkewBound:
    """Send ``probes`` records to ``topic`` (LogAppendTime) and read each back, stamping both ends
    with ``clock``; the bound of the round trips that came back."""
    producer = Producer(producer_config(bootstrap, client, **{"client.id": "skew-probe"}))
    consumer = Consumer(consumer_config(bootstrap, f"skew-probe-{uuid.uuid4().hex[:8]}", client,
                                        **{"enable.auto.commit": False, "fetch.wait.max.ms": 1}))
    md = consumer.list_topics(topic, timeout=timeout_s)
    parts = list(md.topics[topic].partitions)
    # Start reading at the current end so earlier probes are not mistaken for ours.
    consumer.assign([TopicPartition(topic, p, high_watermark(consumer, topic, p, timeout_s)) for p in parts])
    trips = []
    try:
        for _ in range(probes):
            token = uuid.uuid4().bytes
            t0 = clock()
            producer.produce(topic, token, partition=parts[0])
            producer.flush(timeout_s)
            append_ms = _read_back(consumer, token, timeout_s)
            t1 = clock()
            if append_ms is not None:
                trips.append((t0, t1, append_ms))
    finally:
        consumer.close()
    if not trips:
        raise RuntimeError(f"no clock probe came back from topic {topic}")
    return combine(trips)


def _read_back(consumer, token: bytes, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = consumer.poll(0.01)
        if m is not None and not m.error() and m.value() == token:
            return m.timestamp()[1]
    return None


def wait_group_assigned(bootstrap: str, group: str, members: int, partitions: int, services: list = (),
                        timeout_s: float = 90.0, client: KafkaClient | None = None) -> None:
    """Ready = the consumer group is Stable with ``members`` members holding all ``partitions``.
    ``services`` (each with ``check_alive()``) are checked meanwhile, so a dead worker fails fast."""
    admin = AdminClient(admin_config(bootstrap, client))
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        for s in services:
            s.check_alive()
        try:
            desc = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=5)
            assigned = sum(len(m.assignment.topic_partitions) for m in desc.members if m.assignment)
            last = f"state={desc.state}, members={len(desc.members)}, assigned partitions={assigned}"
            if (desc.state == ConsumerGroupState.STABLE and len(desc.members) >= members
                    and assigned >= partitions):
                return
        except Exception as exc:  # noqa: BLE001 - group not known yet
            last = str(exc)
        time.sleep(POLL_S)
    raise TimeoutError(f"consumer group {group} not ready after {timeout_s:.0f}s ({last})")
