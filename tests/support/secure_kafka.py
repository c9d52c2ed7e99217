"""Clients of the secured test broker (services.broker.secure): a record there and back, the reason a
client is refused, a Java tool run with a client's translated properties. Real broker, real clients."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from crayfish.kafka import admin_config, consumer_config, producer_config
from crayfish.kafka_client import KafkaClient
from services.broker import launcher


def produce_and_consume(bootstrap: str, client: KafkaClient | None, topic: str, value: bytes, *,
                        group: str | None = None, timeout_s: float = 20.0) -> list[bytes]:
    """Produce ``value`` to partition 0 of ``topic``, then read the topic from its start until it
    comes back (or ``timeout_s``): the values read. ``group``: read as a member of that consumer
    group (subscribe, commit) instead of by assignment."""
    errors = []
    producer = Producer(producer_config(bootstrap, client))
    producer.produce(topic, value, partition=0, on_delivery=lambda err, _msg: err and errors.append(err))
    if producer.flush(timeout_s) or errors:
        raise RuntimeError(f"record not delivered to {topic}: {errors or 'timed out'}")
    consumer = Consumer(consumer_config(bootstrap, group or f"t-{uuid.uuid4().hex[:8]}", client,
                                        **{"enable.auto.commit": False}))
    if group:
        consumer.subscribe([topic])
    else:
        consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while value not in values and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                raise RuntimeError(f"consuming {topic}: {msg.error()}")
            values.append(msg.value())
            if group and msg.value() == value:
                consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()
    return values


def refusal(bootstrap: str, client: KafkaClient | None = None, timeout_s: float = 5.0) -> str:
    """Why the broker refuses this client: the first error it reports ("" if it only timed out).
    Fails if a metadata request is answered. Returns as soon as the client reports an error."""
    errors: list[KafkaError] = []
    conf = {**admin_config(bootstrap, client), "error_cb": errors.append, "log_level": 0,
            "reconnect.backoff.ms": 100}
    producer = Producer(conf)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            producer.list_topics(timeout=0.25)
        except KafkaException:
            producer.poll(0)
            if errors:
                return "; ".join(dict.fromkeys(f"{e.name()}: {e.str()}" for e in errors))
            continue
        raise AssertionError(f"the broker at {bootstrap} answered a client it should refuse")
    return ""


def java_properties(client: KafkaClient, path: Path) -> Path:
    """``client.java()`` written as a Java .properties file (readable by its owner only)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(launcher.property_line(k, v) + "\n" for k, v in client.java().items())
    return path


def java_tool(main_class: str, *args: str) -> subprocess.Popen:
    """A Kafka command-line tool of the broker's jars (e.g. ``kafka.admin.ConfigCommand``), started
    with a small, quick-starting JVM; its output is read with ``communicate()``."""
    classpath = os.pathsep.join(str(p) for p in sorted(launcher.kafka_lib().glob("*.jar")))
    return subprocess.Popen([launcher._java(), "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                             "-cp", classpath, main_class, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
