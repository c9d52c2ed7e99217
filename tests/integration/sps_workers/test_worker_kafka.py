"""The baseline worker against the real broker: scoring, dead letters with reasons, at-least-once."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from confluent_kafka import Producer

from crayfish.codec import get_codec
from crayfish.kafka import RunTopics, create_topics, delete_topics, producer_config
from crayfish.v1 import batch_pb2
from crayfish.host.procs import Service
from crayfish.kafka import wait_group_assigned
from sps_workers.settings import WorkerSettings
from tests.support.kafka_io import end_offsets, make_batch, read_topics, wait_committed

ENGINES_UNDER_TEST = ["kafka"]


def _read_all(bootstrap, topics, expected, timeout_s=60, done=None):
    return read_topics(bootstrap, topics, lambda got: len(got) >= expected or (done is not None and done(got)),
                       timeout_s)


@pytest.fixture
def worker_factory(kafka_bootstrap, models_dir, tmp_path):
    started = []

    def start(engine="kafka", backend="onnxruntime", codec="protobuf", parallelism=1, partitions=2,
              backend_options=None):
        from sps_workers import ENGINES

        run_id = uuid.uuid4().hex[:8]
        topics = RunTopics.for_run(run_id)
        create_topics(kafka_bootstrap, topics, partitions=partitions)
        group = f"w-{run_id}"
        ws = WorkerSettings(bootstrap=kafka_bootstrap, input_topic=topics.input, output_topic=topics.output,
                            dead_letter_topic=topics.dead_letter, consumer_group=group, codec=codec,
                            model="ffnn", backend=backend, backend_options=backend_options or {},
                            models_dir=str(models_dir), parallelism=parallelism)
        cfg = tmp_path / f"worker-{run_id}.json"
        cfg.write_text(ws.model_dump_json())
        svc = Service(f"{engine}-worker", ["-m", ENGINES[engine].module, "--config", f"@{cfg}"],
                      tmp_path / f"worker-{run_id}.log")
        started.append((svc, topics))
        wait_group_assigned(kafka_bootstrap, group, parallelism, partitions, [svc])
        return svc, topics, run_id, group

    yield start
    for svc, topics in started:
        svc.stop()
        delete_topics(kafka_bootstrap, topics)


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
def test_bad_records_go_to_dead_letter_with_reasons_and_worker_keeps_going(kafka_bootstrap, worker_factory,
                                                                           engine):
    svc, topics, run_id, _ = worker_factory(engine=engine)
    codec = get_codec("protobuf")
    rng = np.random.default_rng(0)
    p = Producer(producer_config(kafka_bootstrap))
    good = [make_batch(run_id, i, rng.random((1, 1, 784), dtype=np.float32)) for i in range(5)]
    bad = {
        f"{run_id}-wrongshape": make_batch(run_id, 100, rng.random((1, 1, 783), dtype=np.float32)),
        f"{run_id}-wrongdtype": make_batch(run_id, 101, rng.random((1, 1, 784)).astype(np.float64)),
        f"{run_id}-unknownmodel": make_batch(run_id, 102, rng.random((1, 1, 784), dtype=np.float32), model="gpt"),
    }
    for key, b in bad.items():
        b.batch_id = key
    p.produce(topics.input, b"\xff\x00 this is not protobuf", b"garbage")
    for b in list(bad.values()) + good:
        value, headers = codec.encode_batch(b)
        p.produce(topics.input, value, b.batch_id.encode(), headers=headers or None)
    p.flush(10)

    msgs = _read_all(kafka_bootstrap, [topics.output, topics.dead_letter], expected=9)
    scored = [codec.decode_scored(m.value()) for m in msgs if m.topic() == topics.output]
    dead = []
    for m in msgs:
        if m.topic() == topics.dead_letter:
            d = batch_pb2.DeadLetter()
            d.ParseFromString(m.value())
            dead.append(d)
    assert sorted(s.batch_id for s in scored) == sorted(b.batch_id for b in good)
    for s in scored:
        assert s.output.shape == [1, 10]
        assert s.facts.backend == "onnxruntime" and s.facts.inference_ns > 0
    reasons = {d.batch_id or "undecodable": d.reason for d in dead}
    assert reasons == {
        "undecodable": "decode_error",
        f"{run_id}-wrongshape": "bad_shape",
        f"{run_id}-wrongdtype": "bad_dtype",
        f"{run_id}-unknownmodel": "unknown_model",
    }
    garbage = next(d for d in dead if d.reason == "decode_error")
    assert garbage.payload == b"\xff\x00 this is not protobuf"
    assert "783" in next(d for d in dead if d.reason == "bad_shape").detail
    assert svc.alive(), svc.log_tail()


def test_offsets_are_committed_after_delivery(kafka_bootstrap, worker_factory):
    """After the outputs are delivered the group's committed offsets reach the end of the input."""
    from crayfish.kafka import consumer_lag

    svc, topics, run_id, group = worker_factory()
    codec = get_codec("protobuf")
    p = Producer(producer_config(kafka_bootstrap))
    x = np.zeros((1, 1, 784), dtype=np.float32)
    for i in range(50):
        value, _ = codec.encode_batch(make_batch(run_id, i, x))
        p.produce(topics.input, value, f"{run_id}-{i}".encode())
    p.flush(10)
    assert len(_read_all(kafka_bootstrap, [topics.output], expected=50)) == 50
    ends = end_offsets(kafka_bootstrap, topics.input)
    assert sum(ends.values()) == 50
    # waits for the group to commit the high-water mark of every input partition (fails naming
    # what it committed instead)
    assert wait_committed(kafka_bootstrap, group, topics.input, ends) == ends
    assert consumer_lag(kafka_bootstrap, group, topics.input) == 0


def test_killed_worker_loses_nothing_at_least_once(kafka_bootstrap, worker_factory, tmp_path):
    """SIGKILL a worker mid-stream, start another in the same group: every batch ends scored."""
    import os
    import signal

    from sps_workers import ENGINES

    svc, topics, run_id, group = worker_factory(backend="sleep", backend_options={"delay_ms": 2},
                                                partitions=1)
    codec = get_codec("protobuf")
    p = Producer(producer_config(kafka_bootstrap))
    x = np.zeros((1, 1, 784), dtype=np.float32)
    n = 1500
    for i in range(n):
        value, _ = codec.encode_batch(make_batch(run_id, i, x))
        p.produce(topics.input, value, f"{run_id}-{i}".encode())
    p.flush(10)
    # Let it score a part, then kill it without any chance to flush or commit.
    first = _read_all(kafka_bootstrap, [topics.output], expected=300)
    assert len(first) >= 300
    os.killpg(svc.proc.pid, signal.SIGKILL)
    svc.proc.wait(timeout=10)

    cfg = next(tmp_path.glob(f"worker-{run_id}.json"))
    again = Service("kafka-worker", ["-m", ENGINES["kafka"].module, "--config", f"@{cfg}"],
                    tmp_path / f"worker-{run_id}-again.log")
    try:
        want = {f"{run_id}-{i}" for i in range(n)}
        msgs = _read_all(kafka_bootstrap, [topics.output], expected=10 * n, timeout_s=60,
                         done=lambda got: {codec.decode_scored(m.value()).batch_id for m in got} >= want)
    finally:
        again.stop()
    ids = [codec.decode_scored(m.value()).batch_id for m in msgs]
    assert set(ids) == {f"{run_id}-{i}" for i in range(n)}
    # Redelivered batches show up as duplicates (counted once for latency by the collector).
    assert len(ids) >= n
