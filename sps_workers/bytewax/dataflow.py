"""The dataflow: WorkerKafkaSource (KafkaSource partitions) -> map(score) -> KafkaSink."""

from __future__ import annotations

import atexit
import json
import logging
import threading

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSink, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_LOG_APPEND_TIME

from confluent_kafka.admin import AdminClient

from crayfish.kafka import CLIENT_LOG_LEVEL, MAX_MESSAGE_BYTES, admin_config, producer_config
from crayfish.kafka_client import client_properties
from sps_workers.runtime import DeliveryFailed, EngineInstance, mark_ready
from sps_workers.settings import WorkerSettings

log = logging.getLogger("crayfish.worker.bytewax")

# What the KafkaSource partitions' consumers add to Bytewax's own settings (no group, no commits).
CONSUMER_CONFIG = {
    "log_level": CLIENT_LOG_LEVEL,
    "fetch.wait.max.ms": 5,
    "fetch.max.bytes": MAX_MESSAGE_BYTES,
    "max.partition.fetch.bytes": MAX_MESSAGE_BYTES,
    "receive.message.max.bytes": MAX_MESSAGE_BYTES + 1024 * 1024,
    "socket.nagle.disable": True,
    "statistics.interval.ms": 0,   # Bytewax's lag gauge: not used here
}


# Set on SIGTERM/SIGINT (sps_workers.bytewax.worker): every source partition ends (EOF), the dataflow
# drains and completes, the sinks flush and close, and cli_main returns.
STOP = threading.Event()


class Instances:
    """This process's EngineInstances, one per Bytewax worker (by Bytewax's worker index)."""

    def __init__(self, settings: WorkerSettings):
        self.settings = settings
        self._by_worker: dict[int, EngineInstance] = {}
        self._lock = threading.Lock()

    def build(self, worker_index: int) -> None:
        inst = EngineInstance(self.settings, engine="bytewax", index=worker_index)
        with self._lock:
            self._by_worker[worker_index] = inst

    def get(self, worker_index: int) -> EngineInstance:
        return self._by_worker[worker_index]

    def close_all(self) -> None:
        with self._lock:
            instances, self._by_worker = list(self._by_worker.values()), {}
        for inst in instances:
            inst.close()


class _WorkerPartition(StatelessSourcePartition):
    """The KafkaSource partitions one worker reads; items are (worker index, KafkaSourceMessage)."""

    def __init__(self, worker_index: int, parts: list, settings: WorkerSettings):
        self.worker_index = worker_index
        self.parts = parts
        self.settings = settings
        self.ready = not parts   # a worker without partitions has nothing to announce

    def next_batch(self) -> list:
        if STOP.is_set():
            raise StopIteration
        batch = []
        for part in self.parts:
            for m in part.next_batch():
                if isinstance(m, KafkaError):
                    log.warning("consumer error on %s[%s]: %s", m.msg.topic, m.msg.partition, m.err)
                    continue
                batch.append((self.worker_index, m))
        if not self.ready:
            self.ready = True
            mark_ready(self.settings)   # after this worker's first read from Kafka
        return batch

    def close(self) -> None:
        for part in self.parts:
            part.close()


class WorkerKafkaSource(DynamicSource):
    """KafkaSource's partitions, placed round-robin on the workers (Kafka partition p on worker
    p % worker_count) instead of by name hash, and each worker's EngineInstance built up front."""

    def __init__(self, source: KafkaSource, settings: WorkerSettings, instances: Instances):
        self.source = source
        self.settings = settings
        self.instances = instances

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WorkerPartition:
        self.instances.build(worker_index)
        topic = self.settings.input_topic
        admin = AdminClient(admin_config(self.settings.bootstrap, self.settings.kafka_client))
        md = admin.list_topics(topic, timeout=30)
        if md.topics[topic].error is not None:
            raise RuntimeError(f"input topic {topic}: {md.topics[topic].error}")
        mine = [p for p in sorted(md.topics[topic].partitions) if p % worker_count == worker_index]
        log.info("worker %d/%d reads partitions %s of %s", worker_index, worker_count, mine, topic)
        # A shared input topic: this run's start offsets (its end when the run began), handed to the
        # partition as its resume state, which KafkaSource assigns instead of OFFSET_BEGINNING. The
        # consumer is assigned at that exact offset before the first read, and the ready file is
        # written only after it: no older record is scored. A fresh topic: its beginning.
        starts = self.settings.start_offsets or {}
        parts = [self.source.build_part(step_id, f"{p}-{topic}", starts.get(p)) for p in mine]
        return _WorkerPartition(worker_index, parts, self.settings)


def build_flow(settings: WorkerSettings, instances: Instances) -> Dataflow:
    brokers = [hp.strip() for hp in settings.bootstrap.split(",") if hp.strip()]
    # The cluster's client properties (security; librdkafka names, references resolved in this
    # process) go to every consumer, producer and admin client of the dataflow.
    source = KafkaSource(brokers, [settings.input_topic], tail=True, starting_offset=OFFSET_BEGINNING,
                         add_config={**CONSUMER_CONFIG, **client_properties(settings.kafka_client)},
                         batch_size=settings.max_poll_records,
                         raise_on_errors=False)
    warned = {"ts": False}

    def score(item) -> KafkaSinkMessage | None:
        if STOP.is_set():
            return None   # stopping: not scored, never committed; a restart reads it again
        worker, msg = item
        ts_type, ts = msg.timestamp or (0, 0)
        if ts_type != TIMESTAMP_LOG_APPEND_TIME and not warned["ts"]:
            warned["ts"] = True
            log.warning("input records carry timestamp type %s, not LogAppendTime (topic config)", ts_type)
        out = instances.get(worker).handle(msg.value, msg.headers, ts, msg.topic, msg.partition, msg.offset)
        return KafkaSinkMessage(key=msg.key, value=out.value, topic=out.topic, headers=out.headers or [])

    def on_delivery(err, msg) -> None:
        if err is not None:   # raised out of the sink's flush: the dataflow stops
            raise DeliveryFailed(f"delivery to {msg.topic()} failed: {err}")

    sink_config = producer_config(settings.bootstrap, settings.kafka_client,
                                  **{"on_delivery": on_delivery, "delivery.report.only.error": True})
    sink_config.pop("bootstrap.servers")
    flow = Dataflow("crayfish-bytewax")
    records = op.input("kafka-in", flow, WorkerKafkaSource(source, settings, instances))
    scored = op.filter_map("score", records, score)
    op.output("kafka-out", scored, KafkaSink(brokers, None, add_config=sink_config))
    return flow


def from_config(path: str) -> Dataflow:
    """For Bytewax's own runner on a cluster: ``python -m bytewax.run
    "sps_workers.bytewax.dataflow:from_config('worker.json')" -w W -i I -a "h1:p;h2:p"``."""
    with open(path) as f:
        settings = WorkerSettings.model_validate(json.load(f))
    instances = Instances(settings)
    atexit.register(instances.close_all)
    return build_flow(settings, instances)
