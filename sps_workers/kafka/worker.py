"""The baseline worker: consume -> ScoringOperator -> produce, mp processes, at-least-once."""

from __future__ import annotations

import collections
import logging
import signal

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from crayfish.codec import get_codec
from crayfish.kafka import consumer_config, poll_batch, produce, producer_config
from sps_workers.runtime import mark_ready, read_settings, run_processes
from sps_workers.scoring_op import OpResult, ScoringOperator
from sps_workers.settings import WorkerSettings

log = logging.getLogger("crayfish.worker.kafka")


class OffsetTracker:
    """Stores an input offset for commit only once it and every earlier offset of its partition
    have had their output delivered (outputs may be acknowledged out of input order)."""

    def __init__(self):
        self.pending: dict[int, collections.deque] = {}
        self.done: dict[int, set] = {}
        self.to_store: dict[int, int] = {}

    def started(self, partition: int, offset: int) -> None:
        q = self.pending.get(partition)
        if q is None:
            q = self.pending[partition] = collections.deque()
            self.done[partition] = set()
        q.append(offset)

    def delivered(self, partition: int, offset: int) -> None:
        q, done = self.pending[partition], self.done[partition]
        done.add(offset)
        while q and q[0] in done:
            done.discard(q[0])
            self.to_store[partition] = q.popleft() + 1

    def in_flight(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def drain(self, topic: str) -> list[TopicPartition]:
        if not self.to_store:
            return []
        out = [TopicPartition(topic, p, o) for p, o in self.to_store.items()]
        self.to_store.clear()
        return out

    def forget(self, partitions) -> None:
        for tp in partitions:
            self.pending.pop(tp.partition, None)
            self.done.pop(tp.partition, None)
            self.to_store.pop(tp.partition, None)


COMMIT_ERRORS_TO_IGNORE = {
    KafkaError._NO_OFFSET, KafkaError._ASSIGNMENT_LOST, KafkaError._STATE, KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
}


class DeliveryFailed(RuntimeError):
    pass


def run_instance(settings: WorkerSettings, index: int) -> None:
    """One worker process: runs until SIGTERM/SIGINT, then drains and commits."""
    from serving.embedded import create_scorer
    from serving.models import MODELS

    worker_id = f"{settings.worker_id}-{index}"
    stop = {"flag": False}

    def _stop(*_):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    spec = MODELS[settings.model]
    codec = get_codec(settings.codec)
    ext = settings.external
    if ext is None:
        scorer = create_scorer(settings.backend, settings.model, models_dir=settings.models_dir,
                               **settings.backend_options)
        op = ScoringOperator(codec, scorer, settings.model, spec.input_shape, worker_id, engine="kafka")
        client = None
    else:
        from serving.clients import create_client

        scorer = None
        client = create_client(ext.client, ext.target, settings.model, timeout_s=ext.timeout_s,
                               max_in_flight=ext.max_in_flight, **ext.client_options)
        op = ScoringOperator(codec, None, settings.model, spec.input_shape, worker_id, engine="kafka",
                             backend=ext.client)
    from observability.light import batch_tracing, worker_context

    tracing = batch_tracing(f"{settings.worker_id}-worker")
    traced = tracing.tracer is not None
    tracker = OffsetTracker()
    failures: list[str] = []
    input_topic = settings.input_topic

    consumer = Consumer(consumer_config(settings.bootstrap, settings.consumer_group,
                                        **{"client.id": worker_id}))
    producer = Producer(producer_config(settings.bootstrap, **{"client.id": worker_id}))

    drain_external = None

    def flush_and_commit() -> None:
        """Wait for every output in flight, then commit the offsets they cover."""
        if drain_external is not None:
            drain_external()
        producer.flush(30)
        stored = tracker.drain(input_topic)
        if stored:
            consumer.store_offsets(offsets=stored)
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as exc:
                # Nothing to commit, or the partitions are gone already (session lost under
                # overload): the next owner re-reads from the last commit (at-least-once).
                if exc.args[0].code() not in COMMIT_ERRORS_TO_IGNORE:
                    raise

    def on_revoke(_consumer, partitions):
        # Finish what is in flight so the next owner of the partitions does not redo it.
        flush_and_commit()
        tracker.forget(partitions)

    def on_assign(_consumer, _partitions):
        mark_ready(settings)

    consumer.subscribe([input_topic], on_assign=on_assign, on_revoke=on_revoke)

    def make_callback(partition: int, offset: int):
        def _cb(err, _msg):
            if err is not None:
                failures.append(f"delivery of output for {input_topic}[{partition}]@{offset} failed: {err}")
                return
            tracker.delivered(partition, offset)
        return _cb

    out_topic, dlq_topic = settings.output_topic, settings.dead_letter_topic
    process = op.process

    client_kind = ext.client if ext is not None else None

    def emit(partition: int, offset: int, key, res, in_headers=None, trace=None) -> None:
        cb = make_callback(partition, offset)
        if res.value is not None:
            headers = res.headers
            if traced and res.timing is not None:
                ctx = trace if trace is not None else worker_context(in_headers)
                if ctx is not None:
                    headers = tracing.record_worker(ctx, input_topic, partition, offset, res.timing, out_topic,
                                                    headers, client=client_kind)
            produce(producer, out_topic, res.value, key, headers=headers, on_delivery=cb)
        else:
            produce(producer, dlq_topic, res.dead_letter, key, on_delivery=cb)

    stage = None
    if client is not None:
        from sps_workers.external import ExternalStage

        keys: dict = {}

        def emit_prepared(prep, res):
            emit(prep.partition, prep.offset, keys.pop((prep.partition, prep.offset), None), res, trace=prep.trace)

        stage = ExternalStage(op, client, emit_prepared, mode=ext.call_mode, max_in_flight=ext.max_in_flight,
                              microbatch_max=ext.microbatch_max, retries=ext.retries, backoff_s=ext.backoff_s)
        drain_external = stage.drain
    try:
        while not stop["flag"]:
            msgs = poll_batch(consumer, settings.max_poll_records, 0.05 if stage is None or not stage.in_flight else 0.0)
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
                if stage is None:
                    headers = m.headers()
                    emit(partition, offset, m.key(), process(m.value(), headers, ts, input_topic, partition, offset),
                         headers)
                    continue
                headers = m.headers()
                prep = op.prepare(m.value(), headers, ts, input_topic, partition, offset)
                if isinstance(prep, OpResult):
                    emit(partition, offset, m.key(), prep)
                else:
                    if traced:
                        prep.trace = worker_context(headers)
                    keys[(partition, offset)] = m.key()
                    prepared.append(prep)
            if stage is not None:
                if prepared:
                    stage.submit(prepared)
                stage.poll(0.005 if stage.in_flight and not msgs else 0.0)
            producer.poll(0)
            if failures:
                raise DeliveryFailed(failures[0])
            stored = tracker.drain(input_topic)
            if stored:
                consumer.store_offsets(offsets=stored)
    finally:
        flush_and_commit()
        consumer.close()
        if scorer is not None:
            scorer.close()
        if client is not None:
            client.close()
        tracing.close()



def main(argv: list[str] | None = None) -> None:
    settings = read_settings(argv, "python -m sps_workers.kafka", "Baseline confluent-kafka scoring worker.")
    if settings.parallelism == 1:
        run_instance(settings, 0)
        return
    n = settings.parallelism
    run_processes(run_instance, [(settings, i) for i in range(n)], [f"{settings.worker_id}-{i}" for i in range(n)],
                  "worker instances")


if __name__ == "__main__":
    main()
