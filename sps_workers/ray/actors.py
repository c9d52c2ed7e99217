"""The three actor types of the Ray pipeline: input (Kafka consumer) -> scoring (EngineInstance)
-> output (Kafka producer), wired one-to-one by the driver (sps_workers.ray.driver)."""

from __future__ import annotations

import collections
import logging
import threading
import time

# The module, not its names: Ray pickles actor classes by value, and confluent-kafka's C types
# (module "cimpl") cannot be pickled as globals; a module is pickled by its name.
import confluent_kafka as kafka
import ray

from crayfish.kafka import consumer_config, poll_batch, produce, producer_config
from sps_workers.offsets import commit_stored
from sps_workers.runtime import DeliveryFailed, EngineInstance
from sps_workers.settings import WorkerSettings

log = logging.getLogger("crayfish.worker.ray")


def _settings(settings_json: str) -> WorkerSettings:
    return WorkerSettings.model_validate_json(settings_json)


@ray.remote
class ScoringActor:
    """One EngineInstance (model session or external-server client, hop spans)."""

    def __init__(self, settings_json: str, index: int):
        self.inst = EngineInstance(_settings(settings_json), engine="ray", index=index)

    def ready(self) -> str:
        return self.inst.worker_id

    def score(self, topic: str, records: list) -> list:
        """records: (key, value, headers, append_ms, partition, offset) -> (topic, key, value, headers)."""
        handle = self.inst.handle
        out = []
        for key, value, headers, append_ms, partition, offset in records:
            e = handle(value, headers, append_ms, topic, partition, offset)
            out.append((e.topic, key, e.value, e.headers))
        return out

    def close(self) -> None:
        self.inst.close()


@ray.remote
class OutputActor:
    """A Kafka producer; a call returns only once every record it was given is delivered."""

    def __init__(self, settings_json: str, index: int):
        s = _settings(settings_json)
        self.producer = kafka.Producer(producer_config(s.bootstrap, s.kafka_client, **{"client.id": f"{s.worker_id}-{index}-out"}))

    def ready(self) -> bool:
        return True

    def produce(self, emits: list) -> int:
        failures: list[str] = []

        def on_delivery(err, _msg):
            if err is not None:
                failures.append(str(err))

        producer = self.producer
        for topic, key, value, headers in emits:
            produce(producer, topic, value, key, headers=headers, on_delivery=on_delivery)
        left = producer.flush(30)
        if failures or left:
            raise DeliveryFailed(f"{len(failures)} deliveries failed, {left} undelivered: "
                                 f"{failures[0] if failures else 'flush timed out'}")
        return len(emits)

    def close(self) -> None:
        self.producer.flush(10)


@ray.remote(max_concurrency=2)   # run() on one thread; stop() / status() on the other
class InputActor:
    """A member of the worker's consumer group. Polls batches of records, sends each batch to its
    scoring actor and the result on to its output actor (the scored records go from actor to
    actor, not back through here), keeps ``max_in_flight`` batches in flight, and stores a
    batch's offsets for commit only once the output actor has delivered it (at-least-once)."""

    def __init__(self, settings_json: str, index: int, scorer, output, max_in_flight: int):
        self.s = _settings(settings_json)
        self.scorer, self.output = scorer, output
        self.max_in_flight = max_in_flight
        self.consumer = kafka.Consumer(consumer_config(self.s.bootstrap, self.s.consumer_group, self.s.kafka_client,
                                                 **{"client.id": f"{self.s.worker_id}-{index}-in"}))
        self.assigned: set[int] = set()
        self.partitions = 0
        self.inflight: collections.deque = collections.deque()   # (ref, {partition: next offset})
        self.stats = {"records": 0, "batches": 0, "commits": 0}
        self._stop = threading.Event()

    def status(self) -> dict:
        return {"assigned": sorted(self.assigned), "partitions": self.partitions, "in_flight": len(self.inflight),
                **self.stats}

    def stop(self) -> None:
        self._stop.set()

    # -- offsets -----------------------------------------------------------------------------------
    def _settle(self, block: bool, wait_s: float = 0.0) -> None:
        """Finish the oldest batches whose output is delivered (all of them when ``block``); store
        their offsets. A failed delivery or a dead actor raises here and ends run()."""
        while self.inflight:
            ref, offsets = self.inflight[0]
            if not block:
                done, _ = ray.wait([ref], timeout=wait_s)
                if not done:
                    return
                wait_s = 0.0
            ray.get(ref)
            self.inflight.popleft()
            self.consumer.store_offsets(offsets=[kafka.TopicPartition(self.s.input_topic, p, o) for p, o in offsets.items()])

    def _commit(self) -> None:
        if commit_stored(self.consumer):
            self.stats["commits"] += 1

    def _on_assign(self, consumer, partitions) -> None:
        self.assigned |= {tp.partition for tp in partitions}
        md = consumer.list_topics(self.s.input_topic, timeout=10)
        self.partitions = len(md.topics[self.s.input_topic].partitions)

    def _on_revoke(self, _consumer, partitions) -> None:
        # Finish what is in flight and commit it, so the partitions' next owner does not redo it.
        self._settle(block=True)
        self._commit()
        self.assigned -= {tp.partition for tp in partitions}

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> dict:
        topic = self.s.input_topic
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not self._stop.is_set():
                msgs = poll_batch(self.consumer, self.s.max_poll_records, 0.001 if self.inflight else 0.05)
                records, offsets = [], {}
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() != kafka.KafkaError._PARTITION_EOF:
                            log.warning("consumer error: %s", err)
                        continue
                    p, o = m.partition(), m.offset()
                    records.append((m.key(), m.value(), m.headers(), m.timestamp()[1], p, o))
                    offsets[p] = o + 1
                if records:
                    scored = self.scorer.score.remote(topic, records)
                    self.inflight.append((self.output.produce.remote(scored), offsets))
                    self.stats["records"] += len(records)
                    self.stats["batches"] += 1
                if len(self.inflight) >= self.max_in_flight:
                    ray.wait([self.inflight[0][0]])         # back-pressure: the oldest must finish
                self._settle(block=False, wait_s=0.0 if records else 0.004)
        finally:
            t0 = time.monotonic()
            try:
                self._settle(block=True)
                self._commit()
            finally:
                self.consumer.close()
            self.stats["drain_s"] = round(time.monotonic() - t0, 3)
        return self.stats
