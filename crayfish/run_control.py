"""The control protocol of a run whose generators and collectors join it from other hosts.

Two topics carry it:

* the **join topic** ``crayfish-runs`` (one partition, shared by every run on the cluster): the runner
  announces a run there as a ``plan`` record keyed by the run id, and an ``ended`` record once the
  run is over; a process finds a run by its id there (:func:`find_run`);
* the run's **control topic** ``crayfish-<run_id>-control`` (one partition, created and deleted by the
  runner): every other message of the run, in one order that every reader sees alike.

A message is a Kafka record whose value is a 4-byte length, a JSON object with ``kind``, then payload
bytes (file chunks). Kinds:

=========  ========================================================================================
plan       runner, join topic: both settings (generator, collector), how many of each, join timeout
ended      runner, join topic: the run is over; a process joining it now is told so
claim      process: ``{role, member, host}``. The first N claims of a role get parts 0..N-1, in the
           control topic's order (:func:`assign_parts`); a later claim gets none
ready      process: prepared (a generator has probed its clock skew; a collector reads its partitions)
start      runner, once every part is claimed and ready: ``{start_at_ns}``, the schedule's origin
progress   collector: ``{completed}``, distinct batches it saw finished so far, every ``PROGRESS_S``
stop       runner: the collectors stop reading and publish
file       process: one chunk of a result file (the payload), before its ``result``
result     process: ``{report, files, host, part}``: its part is done
error      process: ``{error}``: it failed or was stopped; the runner fails the point
abort      runner: ``{reason}``: the point failed; the joined processes exit
=========  ========================================================================================
"""

from __future__ import annotations

import json
import struct
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from crayfish.kafka import (
    MAX_MESSAGE_BYTES,
    _wait_topics_visible,
    admin_config,
    consumer_config,
    high_watermark,
    producer_config,
)
from crayfish.kafka_client import KafkaClient

JOIN_TOPIC = "crayfish-runs"
JOIN_RETENTION_MS = 7 * 24 * 3600 * 1000   # announcements older than a week are of no use
CHUNK_BYTES = 16 * 1024 * 1024             # a result file travels in chunks of at most this
PROGRESS_S = 0.5
ROLES = ("generator", "collector")
_HEADER = struct.Struct(">I")


class RunControlError(RuntimeError):
    """A run that cannot be joined or controlled: the message is one line."""


def control_topic(run_id: str) -> str:
    return f"crayfish-{run_id}-control"


@dataclass(frozen=True)
class Message:
    kind: str
    fields: dict = field(default_factory=dict)
    payload: bytes = b""
    offset: int = -1

    def __getitem__(self, key: str):
        return self.fields[key]

    def get(self, key: str, default=None):
        return self.fields.get(key, default)


def encode(kind: str, payload: bytes = b"", **fields) -> bytes:
    head = json.dumps({"kind": kind, **fields}).encode()
    return _HEADER.pack(len(head)) + head + payload


def decode(value: bytes, offset: int = -1) -> Message:
    (n,) = _HEADER.unpack_from(value)
    head = json.loads(value[_HEADER.size:_HEADER.size + n])
    return Message(head.pop("kind"), head, bytes(value[_HEADER.size + n:]), offset)


def assign_parts(claims: Iterable[Message], wanted: Mapping[str, int]) -> dict[str, tuple[str, int]]:
    """``member -> (role, part)`` for the claims in topic order: the first ``wanted[role]`` distinct
    members of a role get parts 0, 1, ...; later claims and claims of other roles get none."""
    parts: dict[str, tuple[str, int]] = {}
    taken = dict.fromkeys(wanted, 0)
    for m in claims:
        role, member = m.get("role"), m.get("member")
        if m.kind != "claim" or role not in wanted or member in parts or taken[role] >= wanted[role]:
            continue
        parts[member] = (role, taken[role])
        taken[role] += 1
    return parts


# what a reader of a topic that was deleted (the run is over) is told
_GONE = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}


class ControlChannel:
    """Producer and reader of one single-partition topic (read from its start, or from ``start``)."""

    def __init__(self, bootstrap: str, client: KafkaClient | None, topic: str, start: int = 0):
        self.topic = topic
        self._producer_config = producer_config(bootstrap, client, **{
            "client.id": "crayfish-control",
            # a topic that is gone (the run ended) fails a send in seconds, not librdkafka's 5 minutes
            "message.timeout.ms": 30000})
        self._producer: Producer | None = None
        self.consumer = Consumer(consumer_config(bootstrap, f"crayfish-control-{uuid.uuid4().hex[:8]}", client,
                                                 **{"enable.auto.commit": False}))
        self.consumer.assign([TopicPartition(topic, 0, start)])

    def send(self, kind: str, payload: bytes = b"", key: str | None = None, **fields) -> None:
        """Send one message and wait until the broker has it."""
        failed: list = []
        if self._producer is None:
            self._producer = Producer(self._producer_config)
        self._producer.produce(self.topic, encode(kind, payload, **fields), key.encode() if key else None,
                              partition=0, on_delivery=lambda err, _m: err and failed.append(err))
        left = self._producer.flush(35)
        if failed or left:
            raise RunControlError(f"could not send {kind} to {self.topic}: {failed[0] if failed else 'timed out'}")

    def send_files(self, member: str, files: Mapping[str, bytes]) -> None:
        """Each file as ``file`` chunks of at most ``CHUNK_BYTES`` (the topics take 64 MB records)."""
        for name, data in files.items():
            count = max(1, -(-len(data) // CHUNK_BYTES))
            for i in range(count):
                self.send("file", data[i * CHUNK_BYTES:(i + 1) * CHUNK_BYTES], member=member, name=name,
                          index=i, count=count)

    def poll(self, timeout_s: float) -> list[Message]:
        first = self.consumer.poll(timeout_s)
        msgs = [first] if first is not None else []
        if msgs:
            msgs += self.consumer.consume(num_messages=500, timeout=0)
        out = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(decode(m.value(), m.offset()))
            elif err.fatal() or err.code() in _GONE:
                raise RunControlError(f"reading {self.topic}: {err}")
            # else transient (a broker connection lost for a moment): librdkafka retries
        return out

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
        self.consumer.close()


class FileChunks:
    """Collects ``file`` chunks per member; :meth:`files` joins them once the member's result came."""

    def __init__(self):
        self._chunks: dict[tuple[str, str], dict[int, bytes]] = {}

    def add(self, m: Message) -> None:
        self._chunks.setdefault((m["member"], m["name"]), {})[m["index"]] = m.payload

    def files(self, member: str, names: Iterable[str]) -> dict[str, bytes]:
        out = {}
        for name in names:
            chunks = self._chunks.pop((member, name), {})
            out[name] = b"".join(chunks[i] for i in sorted(chunks))
        return out


# ------------------------------------------------------------------------------- join topic


def ensure_topic(bootstrap: str, client: KafkaClient | None, name: str, replication_factor: int = 1,
                 configs: Mapping[str, str] | None = None, timeout_s: float = 30.0) -> None:
    """Create a one-partition topic (LogAppendTime, 64 MB records) unless it exists."""
    admin = AdminClient(admin_config(bootstrap, client))
    config = {"max.message.bytes": str(MAX_MESSAGE_BYTES), **{k: str(v) for k, v in (configs or {}).items()},
              "message.timestamp.type": "LogAppendTime"}
    fut = admin.create_topics([NewTopic(name, 1, replication_factor, config=config)],
                              request_timeout=timeout_s)[name]
    try:
        fut.result(timeout=timeout_s)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise RunControlError(f"could not create topic {name}: {exc}") from None
    _wait_topics_visible(admin, [name], timeout_s)


def announce(bootstrap: str, client: KafkaClient | None, plan: Mapping, replication_factor: int = 1,
             configs: Mapping[str, str] | None = None) -> None:
    """Announce a run (``plan`` with its ``run_id``) on the join topic."""
    ensure_topic(bootstrap, client, JOIN_TOPIC, replication_factor,
                 {**(configs or {}), "retention.ms": str(JOIN_RETENTION_MS)})
    _send_join(bootstrap, client, "plan", key=plan["run_id"], **plan)


def mark_ended(bootstrap: str, client: KafkaClient | None, run_id: str, reason: str = "") -> None:
    _send_join(bootstrap, client, "ended", key=run_id, run_id=run_id, reason=reason)


def _send_join(bootstrap: str, client: KafkaClient | None, kind: str, key: str, **fields) -> None:
    ch = ControlChannel(bootstrap, client, JOIN_TOPIC)
    try:
        ch.send(kind, key=key, **fields)
    finally:
        ch.close()


def join_topic_end(bootstrap: str, client: KafkaClient | None = None) -> int:
    """The join topic's end offset (0 when it does not exist yet)."""
    c = Consumer(admin_config(bootstrap, client) | {"group.id": "crayfish-join-end"})
    try:
        if JOIN_TOPIC not in c.list_topics(timeout=10).topics:
            return 0
        return high_watermark(c, JOIN_TOPIC, 0)
    finally:
        c.close()


def read_join_topic(bootstrap: str, client: KafkaClient | None, start: int = 0,
                    wait_s: float = 0.0) -> list[Message]:
    """The join topic's messages from ``start`` to its end; with ``wait_s``, waits that long for one
    to come when there is none yet."""
    end = join_topic_end(bootstrap, client)
    deadline = time.monotonic() + wait_s
    while end <= start and time.monotonic() < deadline:
        time.sleep(0.1)
        end = join_topic_end(bootstrap, client)
    if end <= start:
        return []
    ch = ControlChannel(bootstrap, client, JOIN_TOPIC, start)
    out: list[Message] = []
    try:
        limit = time.monotonic() + 30
        while (not out or out[-1].offset < end - 1) and time.monotonic() < limit:
            out += ch.poll(0.5)
    finally:
        ch.close()
    return out


def find_run(bootstrap: str, client: KafkaClient | None, run_id: str) -> dict:
    """The plan of run ``run_id``; fails in one line when no such run was announced or it has ended."""
    plan = ended = None
    for m in read_join_topic(bootstrap, client):
        if m.get("run_id") == run_id:
            plan, ended = (m.fields, ended) if m.kind == "plan" else (plan, m)
    if plan is None:
        raise RunControlError(f"no run {run_id} announced at {bootstrap} (topic {JOIN_TOPIC})")
    if ended is not None:
        why = f": {ended.get('reason')}" if ended.get("reason") else ""
        raise RunControlError(f"run {run_id} has ended{why}")
    return plan


def wait_announced(bootstrap: str, client: KafkaClient | None, start: int, timeout_s: float,
                   experiment: str | None = None) -> dict:
    """The first plan (of ``experiment``, when given) announced at or after offset ``start`` of the
    join topic (waits for it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for m in read_join_topic(bootstrap, client, start, wait_s=min(1.0, max(0.0, deadline - time.monotonic()))):
            if m.kind == "plan" and experiment in (None, m.get("experiment")):
                return m.fields
            start = m.offset + 1
    raise RunControlError(f"no run announced at {bootstrap} within {timeout_s:.0f} s")
