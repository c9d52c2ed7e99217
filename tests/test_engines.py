"""The engine conformance suite: every stream processor in sps_workers.ENGINES, against the real broker.

Each engine runs for real in its own environment (built on demand and cached) and must:
- score every batch, with predictions equal to the numpy reference, full accounting;
- dead-letter malformed records with their reason and keep running (good records after them scored);
- carry the W3C trace context of a sampled batch to its output and record the worker's hop spans;
- really run mp > 1 instances in parallel (outputs come from distinct task/thread/actor ids);
- score through the external Scoring service as well as embedded ONNX.

A new engine passes this file unchanged once it is registered in sps_workers.ENGINES.
"""

from __future__ import annotations

import os
import time
import uuid

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from crayfish.codec import get_codec
from crayfish.kafka import RunTopics, consumer_config, create_topics, delete_topics, producer_config
from crayfish.tensor import from_tensor
from crayfish.v1 import batch_pb2
from crayfish.host.procs import Service
from sps_workers import ENGINES
from sps_workers.settings import ExternalSettings, WorkerSettings
from tests.kafka_io import make_batch

ALL_ENGINES = sorted(ENGINES)
TRACEPARENT = "00-{trace}-{span}-01"


def _read(bootstrap, topics, until, timeout_s=120):
    """Read the topics from the start until ``until(messages)`` holds (or the timeout)."""
    c = Consumer(consumer_config(bootstrap, f"t-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
    parts = []
    for t in topics:
        md = c.list_topics(t, timeout=10)
        parts += [TopicPartition(t, p, 0) for p in md.topics[t].partitions]
    c.assign(parts)
    out = []
    deadline = time.monotonic() + timeout_s
    while not until(out) and time.monotonic() < deadline:
        out += [m for m in c.consume(100, timeout=0.2) if not m.error()]
    c.close()
    return out


@pytest.fixture
def engine_factory(kafka_bootstrap, models_dir, tmp_path):
    """Start an engine's worker as the runner does (its environment's interpreter, readiness by
    consumer group or ready file) on fresh topics."""
    from crayfish.host.envs import python_for

    started = []

    def start(engine, parallelism=1, partitions=2, external=None, env=None):
        spec = ENGINES[engine]
        run_id = uuid.uuid4().hex[:8]
        topics = RunTopics.for_run(run_id)
        create_topics(kafka_bootstrap, topics, partitions=partitions)
        ws = WorkerSettings(bootstrap=kafka_bootstrap, input_topic=topics.input, output_topic=topics.output,
                            dead_letter_topic=topics.dead_letter, consumer_group=f"w-{run_id}",
                            model="ffnn", models_dir=str(models_dir), parallelism=parallelism,
                            worker_id=engine, external=external,
                            ready_file=str(tmp_path / f"worker-{run_id}.ready"))
        cfg = tmp_path / f"worker-{run_id}.json"
        cfg.write_text(ws.model_dump_json())
        svc = Service(f"{engine}-worker", ["-m", spec.module, "--config", f"@{cfg}"],
                      tmp_path / f"worker-{run_id}.log", python=python_for(spec.environment), env=env)
        started.append((svc, topics))
        spec.wait_ready(ws, partitions, [svc], timeout_s=240)
        return svc, topics, run_id

    yield start
    for svc, topics in started:
        svc.stop()
        delete_topics(kafka_bootstrap, topics)


def _reference(models_dir):
    from serving.models import model_paths, reference_forward

    weights = model_paths("ffnn", models_dir).weights
    return lambda x: reference_forward("ffnn", weights, x)


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_engine_scores_dead_letters_and_traces(kafka_bootstrap, engine_factory, models_dir, tmp_path, engine):
    spans_dir = tmp_path / "spans-run"
    env = {"CRAYFISH_SPANS_DIR": str(spans_dir), "OTEL_TRACES_SAMPLER": "parentbased_always_off"}
    svc, topics, run_id = engine_factory(engine, env=env)
    codec = get_codec("protobuf")
    rng = np.random.default_rng(7)
    p = Producer(producer_config(kafka_bootstrap))

    def send(b, partition=0, headers=None):
        value, h = codec.encode_batch(b)
        p.produce(topics.input, value, b.batch_id.encode(), partition=partition,
                  headers=(h or []) + (headers or []) or None)

    good = {}
    for i in range(10):
        good[f"{run_id}-{i}"] = rng.random((2, 1, 784), dtype=np.float32)
        send(make_batch(run_id, i, good[f"{run_id}-{i}"]), partition=i % 2)
    trace_id, parent_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traced_id = f"{run_id}-traced"
    b = make_batch(run_id, 50, rng.random((1, 1, 784), dtype=np.float32))
    b.batch_id = traced_id
    good[traced_id] = from_tensor(b.input)
    send(b, headers=[("traceparent", TRACEPARENT.format(trace=trace_id, span=parent_span).encode())])
    p.produce(topics.input, b"\xff\x00 this is not protobuf", b"garbage", partition=0)
    bad = {f"{run_id}-wrongshape": make_batch(run_id, 100, rng.random((1, 1, 783), dtype=np.float32)),
           f"{run_id}-wrongdtype": make_batch(run_id, 101, rng.random((1, 1, 784)).astype(np.float64)),
           f"{run_id}-unknownmodel": make_batch(run_id, 102, rng.random((1, 1, 784), dtype=np.float32), model="gpt")}
    for key, bb in bad.items():
        bb.batch_id = key
        send(bb, partition=1)
    # Good records after the bad ones: the job must still be running.
    for i in range(10, 14):
        good[f"{run_id}-{i}"] = rng.random((1, 1, 784), dtype=np.float32)
        send(make_batch(run_id, i, good[f"{run_id}-{i}"]), partition=i % 2)
    p.flush(10)

    n_expected = len(good) + len(bad) + 1

    def complete(msgs):
        return len(msgs) >= n_expected

    msgs = _read(kafka_bootstrap, [topics.output, topics.dead_letter], complete)
    scored = {}
    out_headers = {}
    dead = []
    for m in msgs:
        if m.topic() == topics.output:
            s = codec.decode_scored(m.value(), m.headers())
            scored[s.batch_id] = s
            out_headers[s.batch_id] = dict(m.headers() or [])
        else:
            d = batch_pb2.DeadLetter()
            d.ParseFromString(m.value())
            dead.append(d)
    assert set(scored) == set(good), svc.log_tail()
    ref = _reference(models_dir)
    for bid, s in scored.items():
        assert s.facts.engine == engine
        assert s.facts.backend == "onnxruntime" and s.facts.inference_ns > 0
        assert s.input_append_ms > 0 and s.facts.worker_send_ns >= s.facts.worker_receive_ns > 0
        np.testing.assert_allclose(from_tensor(s.output), ref(good[bid]), rtol=1e-4, atol=1e-5)
    reasons = {d.batch_id or "undecodable": d.reason for d in dead}
    assert reasons == {"undecodable": "decode_error", f"{run_id}-wrongshape": "bad_shape",
                       f"{run_id}-wrongdtype": "bad_dtype", f"{run_id}-unknownmodel": "unknown_model"}
    assert next(d for d in dead if d.reason == "decode_error").payload == b"\xff\x00 this is not protobuf"
    assert svc.alive(), svc.log_tail()

    # Trace context carried on: same trace, a new span (the worker's producer span) ...
    tp = out_headers[traced_id].get("traceparent")
    assert tp is not None, f"{engine} dropped the trace context"
    _, out_trace, out_span, flags = tp.decode().split("-")
    assert out_trace == trace_id and out_span != parent_span and int(flags, 16) & 1
    # ... the untraced batches stay untraced ...
    assert all("traceparent" not in h for bid, h in out_headers.items() if bid != traced_id)
    # ... and the worker's hop spans are recorded under the incoming context (flushed on stop).
    svc.stop()
    from observability.hops import read_spans

    spans = read_spans(spans_dir)
    mine = [s for s in spans if s["trace_id"] == trace_id]
    names = {s["name"] for s in mine}
    assert {"crayfish.decode", "crayfish.score", "crayfish.encode"} <= names, names
    process = next(s for s in mine if s["name"].startswith("process "))
    assert process["parent_id"] == parent_span


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_engine_runs_mp_instances_in_parallel(kafka_bootstrap, engine_factory, engine):
    _, topics, run_id = engine_factory(engine, parallelism=2, partitions=2)
    codec = get_codec("protobuf")
    p = Producer(producer_config(kafka_bootstrap))
    x = np.zeros((1, 1, 784), dtype=np.float32)
    n = 40
    for i in range(n):
        value, h = codec.encode_batch(make_batch(run_id, i, x))
        p.produce(topics.input, value, f"{run_id}-{i}".encode(), partition=i % 2, headers=h or None)
    p.flush(10)
    msgs = _read(kafka_bootstrap, [topics.output], lambda got: len(got) >= n)
    scored = [codec.decode_scored(m.value(), m.headers()) for m in msgs]
    assert {s.batch_id for s in scored} == {f"{run_id}-{i}" for i in range(n)}
    workers = {s.facts.worker_id for s in scored}
    assert len(workers) >= 2, f"{engine}: every batch scored by {workers}"


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_engine_scores_through_the_scoring_service(kafka_bootstrap, engine_factory, models_dir, tmp_path, engine):
    from serving.scoring.launcher import start

    server = start("ffnn", instances=1, models_dir=models_dir, log_dir=tmp_path / "server")
    try:
        ext = ExternalSettings(client="scoring", target=server.target, timeout_s=5.0)
        _, topics, run_id = engine_factory(engine, external=ext)
        codec = get_codec("protobuf")
        p = Producer(producer_config(kafka_bootstrap))
        rng = np.random.default_rng(3)
        xs = {f"{run_id}-{i}": rng.random((1, 1, 784), dtype=np.float32) for i in range(10)}
        for i, (bid, x) in enumerate(xs.items()):
            value, h = codec.encode_batch(make_batch(run_id, i, x))
            p.produce(topics.input, value, bid.encode(), partition=i % 2, headers=h or None)
        p.flush(10)
        msgs = _read(kafka_bootstrap, [topics.output], lambda got: len(got) >= len(xs))
    finally:
        server.stop()
    scored = {s.batch_id: s for s in (codec.decode_scored(m.value(), m.headers()) for m in msgs)}
    assert set(scored) == set(xs)
    ref = _reference(models_dir)
    for bid, s in scored.items():
        assert s.facts.backend == "scoring" and s.facts.server == "crayfish-scoring"
        assert s.facts.server_inference_ns > 0
        np.testing.assert_allclose(from_tensor(s.output), ref(xs[bid]), rtol=1e-4, atol=1e-5)


def test_every_engine_is_registered_with_a_module():
    import importlib.util

    for name, spec in ENGINES.items():
        assert spec.name == name
        assert importlib.util.find_spec(spec.module) is not None, spec.module
        assert os.path.isfile(f"envs/{spec.environment}/requirements.txt") or spec.environment == "core"


def test_runner_runs_a_non_core_engine_through_an_external_server(kafka_bootstrap, models_dir, tmp_path):
    """`crayfish run` with an engine that has its own environment and external serving: the worker
    runs in the engine's environment (not the client's) and every batch is scored by the server."""
    from services.runner.experiment import Experiment
    from services.runner.experiments import run_experiment

    exp = Experiment.model_validate({
        "name": "engine-ext", "model": "ffnn", "engine": "bytewax", "kafka": {"bootstrap": kafka_bootstrap},
        "serving": {"kind": "external", "server": "scoring"},
        "workload": {"type": "constant", "rate": 50, "duration_s": 2},
        "validity": {"min_duration_s": 1, "min_count": 20}})
    point = run_experiment(exp, tmp_path / "run", models_dir=models_dir)["points"][0]
    assert point["accounting"]["scored"] == point["accounting"]["sent"] == 100
    assert point["answered_by"] == ["crayfish-scoring"]
    # Bytewax commits no group offsets: sustainability is judged on the backlog, not on commits.
    import pyarrow.parquet as pq

    lag = pq.read_table(next((tmp_path / "run").glob("points/*/rep-0/lag.parquet"))).to_pydict()
    assert lag["lag"] and set(lag["committed_lag"]) == {-1}


def test_ready_file_written_by_many_instances_at_once(tmp_path):
    """Every parallel instance may mark the pipeline ready at the same moment; none may fail."""
    import threading

    from sps_workers.runtime import mark_ready

    ws = WorkerSettings(bootstrap="127.0.0.1:9", input_topic="i", output_topic="o", dead_letter_topic="d",
                        consumer_group="g", model="ffnn", ready_file=str(tmp_path / "worker.ready"))
    errors = []

    def mark():
        try:
            for _ in range(50):
                mark_ready(ws)
        except Exception as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    threads = [threading.Thread(target=mark) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert (tmp_path / "worker.ready").read_text() == "ready\n"
    assert [p.name for p in tmp_path.iterdir()] == ["worker.ready"]
