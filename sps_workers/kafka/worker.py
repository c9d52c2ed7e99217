"""The baseline worker: consume -> EngineInstance -> produce, mp processes, at-least-once."""

from __future__ import annotations

import logging
import signal

from confluent_kafka import Consumer, KafkaError, Producer

from crayfish.kafka import consumer_config, poll_batch, produce, producer_config
from sps_workers.kafka.options import KafkaOptions
from sps_workers.offsets import OffsetTracker, commit_stored
from sps_workers.runtime import DeliveryFailed, EngineInstance, Emit, mark_ready, read_settings, run_processes
from sps_workers.settings import WorkerSettings

log = logging.getLogger("crayfish.worker.kafka")


def run_instance(settings: WorkerSettings, index: int) -> None:
    """One worker process: runs until SIGTERM/SIGINT, then drains and commits."""
    stop = {"flag": False}

    def _stop(*_):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    worker_id = f"{settings.worker_id}-{index}"
    input_topic = settings.input_topic
    tracker = OffsetTracker()
    failures: list[str] = []

    def send(partition: int, offset: int, key, out: Emit) -> None:
        """Produce one record; its input offset is stored for commit once the broker has it."""
        def delivered(err, _msg):
            if err is not None:
                failures.append(f"delivery of output for {input_topic}[{partition}]@{offset} failed: {err}")
                return
            tracker.delivered(partition, offset)

        produce(producer, out.topic, out.value, key, headers=out.headers, on_delivery=delivered)

    # External calls in flight (call_mode pipelined / microbatch) come back through on_emit: the
    # message key of each waits here meanwhile.
    keys: dict = {}

    def on_emit(prep, out: Emit) -> None:
        send(prep.partition, prep.offset, keys.pop((prep.partition, prep.offset), None), out)

    inst = EngineInstance(settings, engine="kafka", index=index,
                          on_emit=on_emit if settings.external is not None else None)
    concurrent = inst.stage is not None
    consumer = Consumer(consumer_config(settings.bootstrap, settings.consumer_group, settings.kafka_client, **{"client.id": worker_id}))
    producer = Producer(producer_config(settings.bootstrap, settings.kafka_client, **{"client.id": worker_id}))

    def flush_and_commit() -> None:
        """Wait for every output in flight, then commit the offsets they cover."""
        inst.drain()
        producer.flush(30)
        stored = tracker.drain(input_topic)
        if stored:
            consumer.store_offsets(offsets=stored)
            commit_stored(consumer)

    def on_revoke(_consumer, partitions):
        # Finish what is in flight so the next owner of the partitions does not redo it.
        flush_and_commit()
        tracker.forget(partitions)

    def on_assign(_consumer, _partitions):
        mark_ready(settings)

    consumer.subscribe([input_topic], on_assign=on_assign, on_revoke=on_revoke)
    handle, prepare = inst.handle, inst.prepare
    try:
        while not stop["flag"]:
            msgs = poll_batch(consumer, settings.max_poll_records, 0.0 if inst.in_flight else 0.05)
            prepared = []
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", err)
                    continue
                partition, offset = m.partition(), m.offset()
                _, ts = m.timestamp()
                tracker.started(partition, offset)
                if not concurrent:
                    send(partition, offset, m.key(), handle(m.value(), m.headers(), ts, input_topic, partition, offset))
                    continue
                prep = prepare(m.value(), m.headers(), ts, input_topic, partition, offset)
                if isinstance(prep, Emit):
                    send(partition, offset, m.key(), prep)
                else:
                    keys[(partition, offset)] = m.key()
                    prepared.append(prep)
            if concurrent:
                if prepared:
                    inst.submit(prepared)
                inst.poll(0.005 if inst.in_flight and not msgs else 0.0)
            producer.poll(0)
            if failures:
                raise DeliveryFailed(failures[0])
            stored = tracker.drain(input_topic)
            if stored:
                consumer.store_offsets(offsets=stored)
    finally:
        flush_and_commit()
        consumer.close()
        inst.close()


def main(argv: list[str] | None = None) -> None:
    settings, _ = read_settings(argv, "python -m sps_workers.kafka", "Baseline confluent-kafka scoring worker.",
                                KafkaOptions)
    if settings.parallelism == 1:
        run_instance(settings, 0)
        return
    n = settings.parallelism
    run_processes(run_instance, [(settings, i) for i in range(n)], [f"{settings.worker_id}-{i}" for i in range(n)],
                  "worker instances")


if __name__ == "__main__":
    main()
