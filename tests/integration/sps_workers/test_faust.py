"""Faust engine specifics (sps_workers/faust), beyond the shared suite in test_engines.py: options
validation, no listener beyond loopback (Faust starts a web server by default), offsets committed on
SIGTERM so a restart resumes without re-scoring, and agent concurrency spreading (not copying) work."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from crayfish.codec import get_codec
from tests.support.kafka_io import read_records, read_to_end, send_batches, wait_committed
from tests.support.procs import listening, loopback_listeners
from crayfish.kafka import RunTopics, create_topics, delete_topics, producer_config
from crayfish.v1 import batch_pb2
from crayfish.host.procs import Service
from sps_workers import ENGINES
from sps_workers.faust.options import FaustOptions
from sps_workers.options import EngineOptionsError
from sps_workers.settings import WorkerSettings

ENGINE = "faust"


def test_options_are_validated_naming_the_field():
    assert FaustOptions.parse({}).concurrency == 1 and FaustOptions.parse(None).web_port is None
    with pytest.raises(EngineOptionsError, match=r"^engine_options\.bogus: unknown option of the faust engine"):
        FaustOptions.parse({"bogus": 1})
    with pytest.raises(EngineOptionsError, match=r"^engine_options\.concurrency: Input should be greater than or equal to 1"):
        FaustOptions.parse({"concurrency": 0})
    with pytest.raises(EngineOptionsError, match=r"^engine_options\.web_port"):
        FaustOptions.parse({"web_port": 70000})


def test_worker_rejects_a_bad_option_before_starting(tmp_path):
    from crayfish.host.envs import python_for

    ws = WorkerSettings(bootstrap="127.0.0.1:1", input_topic="i", output_topic="o", dead_letter_topic="d",
                       consumer_group="g", model="ffnn", worker_id=ENGINE, engine_options={"concurency": 2})
    proc = subprocess.run([python_for(ENGINES[ENGINE].environment), "-m", ENGINES[ENGINE].module,
                           "--config", ws.model_dump_json()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "faust worker: bad config: engine_options.concurency: unknown option of the faust engine" in proc.stderr


@pytest.fixture
def faust_worker(kafka_bootstrap, models_dir, tmp_path):
    from crayfish.host.envs import python_for

    started, made = [], []

    def start(parallelism=1, engine_options=None, run_id=None):
        fresh = run_id is None
        run_id = run_id or uuid.uuid4().hex[:8]
        topics = RunTopics.for_run(run_id)
        if fresh:
            create_topics(kafka_bootstrap, topics, partitions=2)
            made.append(topics)
        ws = WorkerSettings(bootstrap=kafka_bootstrap, input_topic=topics.input, output_topic=topics.output,
                            dead_letter_topic=topics.dead_letter, consumer_group=f"w-{run_id}", model="ffnn",
                            models_dir=str(models_dir), parallelism=parallelism, worker_id=ENGINE,
                            engine_options=engine_options or {})
        cfg = tmp_path / f"worker-{run_id}-{len(started)}.json"
        cfg.write_text(ws.model_dump_json())
        spec = ENGINES[ENGINE]
        svc = Service(f"{ENGINE}-worker", ["-m", spec.module, "--config", f"@{cfg}"],
                      tmp_path / f"worker-{run_id}-{len(started)}.log", python=python_for(spec.environment))
        started.append(svc)
        spec.wait_ready(ws, 2, [svc], timeout_s=240)
        return svc, topics, run_id

    yield start
    for svc in started:
        svc.stop()
    for topics in made:
        delete_topics(kafka_bootstrap, topics)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_listener_by_default_and_web_server_only_on_loopback(faust_worker):
    svc, _, _ = faust_worker()
    assert listening(svc.proc.pid) == [], "Faust's web server must be off by default"
    port = _free_port()
    svc2, _, _ = faust_worker(engine_options={"web_port": port})
    deadline = time.monotonic() + 60
    while not listening(svc2.proc.pid) and time.monotonic() < deadline:   # the web server binds after the join
        time.sleep(0.2)
    addrs = loopback_listeners(svc2.proc.pid)   # fails when nothing listens
    assert all(a.ip == "127.0.0.1" for a in addrs), addrs
    assert any(a.port == port for a in addrs)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        assert r.status == 200


def test_sigterm_commits_offsets_and_a_restart_resumes_after_them(kafka_bootstrap, faust_worker):
    svc, topics, run_id = faust_worker()
    send_batches(kafka_bootstrap, topics.input, run_id, range(20))
    p = Producer(producer_config(kafka_bootstrap))
    p.produce(topics.input, None, b"tombstone", partition=0)   # a null value: dead-lettered, not skipped
    p.flush(10)
    assert len(read_records(kafka_bootstrap, topics.output, 20)) == 20
    dead = read_records(kafka_bootstrap, topics.dead_letter, 1)
    d = batch_pb2.DeadLetter()
    d.ParseFromString(dead[0].value())
    assert d.reason == "decode_error"
    code = svc.stop()   # a stop that needs SIGKILL returns -9
    assert code == 0, svc.log_tail()
    # Every scored input offset is committed ...
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"w-{run_id}"})
    committed = c.committed([TopicPartition(topics.input, p) for p in (0, 1)], timeout=10)
    highs = [c.get_watermark_offsets(TopicPartition(topics.input, p), timeout=10)[1] for p in (0, 1)]
    c.close()
    assert [tp.offset for tp in committed] == highs == [11, 10]
    # Faust declared nothing: no leader, changelog or repartition topics of the app.
    names = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert not [t for t in names if t.startswith(f"w-{run_id}")], names
    # ... so the same group started again scores only what is new.
    svc2, _, _ = faust_worker(run_id=run_id)
    send_batches(kafka_bootstrap, topics.input, run_id, range(20, 25))
    assert len(read_records(kafka_bootstrap, topics.output, 25)) >= 25
    # Drained: the group committed the whole input (every record consumed and answered), then the
    # output topic read up to its high-water mark holds each batch once: a re-scored old batch
    # cannot arrive after the window we look at.
    wait_committed(kafka_bootstrap, f"w-{run_id}", topics.input)
    assert svc2.alive(), svc2.log_tail()
    assert svc2.stop() == 0, svc2.log_tail()
    msgs = read_to_end(kafka_bootstrap, topics.output)
    ids = [get_codec("protobuf").decode_scored(m.value(), m.headers()).batch_id for m in msgs]
    assert sorted(ids) == sorted(f"{run_id}-{i}" for i in range(25)), "re-scored or lost batches"


def test_agent_concurrency_spreads_records_over_actors(kafka_bootstrap, faust_worker):
    svc, topics, run_id = faust_worker(engine_options={"concurrency": 2})
    send_batches(kafka_bootstrap, topics.input, run_id, range(40))
    assert len(read_records(kafka_bootstrap, topics.output, 40)) >= 40
    # Drained (whole input committed, the worker stopped cleanly), then the whole output topic:
    # a record scored by both actors shows up twice, however late the second copy.
    wait_committed(kafka_bootstrap, f"w-{run_id}", topics.input)
    assert svc.stop() == 0, svc.log_tail()
    msgs = read_to_end(kafka_bootstrap, topics.output)
    scored = [get_codec("protobuf").decode_scored(m.value(), m.headers()) for m in msgs]
    assert sorted(s.batch_id for s in scored) == sorted(f"{run_id}-{i}" for i in range(40)), "duplicated or lost"
    assert {s.facts.worker_id for s in scored} == {"faust-0.0", "faust-0.1"}, svc.log_tail()

