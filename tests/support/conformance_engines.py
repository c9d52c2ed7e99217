"""The engine conformance checks: what every registered stream processor must do, against the real broker.

Used by tests/integration/sps_workers/test_engines.py (every engine of sps_workers.ENGINES) and tests/integration/sps_workers/test_extension_engines.py
(a throwaway engine registered the way the checklist of sps_workers says). Each check starts the
engine's worker the way the runner does (:class:`EngineStarter`) and asserts on what comes out:

- :func:`check_scores_dead_letters_and_traces`: every batch scored, predictions equal to the numpy
  reference, malformed records dead-lettered with their reason while the job keeps running, the W3C
  trace context of a sampled batch carried to its output, the worker's hop spans recorded;
- :func:`check_mp_instances_in_parallel`: mp > 1 instances really run (outputs from distinct ids);
- :func:`check_scores_through_the_scoring_service`: external serving through our Scoring server;
- :func:`check_registration`: the registry entry points at an importable module and a real environment.
"""

from __future__ import annotations

import importlib.util
import os
import uuid

import numpy as np
from confluent_kafka import Producer

from crayfish.codec import get_codec
from crayfish.host.envs import python_for
from crayfish.host.procs import Service
from crayfish.kafka import RunTopics, create_topics, delete_topics, producer_config
from crayfish.tensor import from_tensor
from crayfish.v1 import batch_pb2
from observability.hops import read_spans
from serving.models import model_paths, reference_forward
from serving.scoring.launcher import start as start_scoring_server
from sps_workers import ENGINES, EngineSpec
from sps_workers.settings import ExternalSettings, WorkerSettings
from tests.support.kafka_io import make_batch, read_topics

TRACEPARENT = "00-{trace}-{span}-01"


class EngineStarter:
    """Starts an engine's worker as the runner does (its environment's interpreter, readiness by
    consumer group or ready file) on fresh topics; :meth:`close` stops them and drops the topics."""

    def __init__(self, bootstrap: str, models_dir, tmp_path):
        self.bootstrap, self.models_dir, self.tmp_path = bootstrap, models_dir, tmp_path
        self.started: list[tuple[Service, RunTopics]] = []

    def __call__(self, engine: str, parallelism=1, partitions=2, external=None, env=None):
        spec = ENGINES[engine]
        run_id = uuid.uuid4().hex[:8]
        topics = RunTopics.for_run(run_id)
        create_topics(self.bootstrap, topics, partitions=partitions)
        ws = WorkerSettings(bootstrap=self.bootstrap, input_topic=topics.input, output_topic=topics.output,
                            dead_letter_topic=topics.dead_letter, consumer_group=f"w-{run_id}",
                            model="ffnn", models_dir=str(self.models_dir), parallelism=parallelism,
                            worker_id=engine, external=external,
                            ready_file=str(self.tmp_path / f"worker-{run_id}.ready"))
        cfg = self.tmp_path / f"worker-{run_id}.json"
        cfg.write_text(ws.model_dump_json())
        svc = Service(f"{engine}-worker", ["-m", spec.module, "--config", f"@{cfg}"],
                      self.tmp_path / f"worker-{run_id}.log", python=python_for(spec.environment), env=env)
        self.started.append((svc, topics))
        spec.wait_ready(ws, partitions, [svc], timeout_s=240)
        return svc, topics, run_id

    def close(self) -> None:
        for svc, topics in self.started:
            svc.stop()
            delete_topics(self.bootstrap, topics)


def reference(models_dir):
    weights = model_paths("ffnn", models_dir).weights
    return lambda x: reference_forward("ffnn", weights, x)


def check_scores_dead_letters_and_traces(bootstrap, start: EngineStarter, models_dir, tmp_path, engine: str):
    spans_dir = tmp_path / "spans-run"
    env = {"CRAYFISH_SPANS_DIR": str(spans_dir), "OTEL_TRACES_SAMPLER": "parentbased_always_off"}
    svc, topics, run_id = start(engine, env=env)
    codec = get_codec("protobuf")
    rng = np.random.default_rng(7)
    p = Producer(producer_config(bootstrap))

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
    msgs = read_topics(bootstrap, [topics.output, topics.dead_letter], lambda got: len(got) >= n_expected)
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
    ref = reference(models_dir)
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
    spans = read_spans(spans_dir)
    mine = [s for s in spans if s["trace_id"] == trace_id]
    names = {s["name"] for s in mine}
    assert {"crayfish.decode", "crayfish.score", "crayfish.encode"} <= names, names
    process = next(s for s in mine if s["name"].startswith("process "))
    assert process["parent_id"] == parent_span


def check_mp_instances_in_parallel(bootstrap, start: EngineStarter, engine: str):
    _, topics, run_id = start(engine, parallelism=2, partitions=2)
    codec = get_codec("protobuf")
    p = Producer(producer_config(bootstrap))
    x = np.zeros((1, 1, 784), dtype=np.float32)
    n = 40
    for i in range(n):
        value, h = codec.encode_batch(make_batch(run_id, i, x))
        p.produce(topics.input, value, f"{run_id}-{i}".encode(), partition=i % 2, headers=h or None)
    p.flush(10)
    msgs = read_topics(bootstrap, [topics.output], lambda got: len(got) >= n)
    scored = [codec.decode_scored(m.value(), m.headers()) for m in msgs]
    assert {s.batch_id for s in scored} == {f"{run_id}-{i}" for i in range(n)}
    workers = {s.facts.worker_id for s in scored}
    assert len(workers) >= 2, f"{engine}: every batch scored by {workers}"


def check_scores_through_the_scoring_service(bootstrap, start: EngineStarter, models_dir, tmp_path, engine: str):
    server = start_scoring_server("ffnn", instances=1, models_dir=models_dir, log_dir=tmp_path / "server")
    try:
        ext = ExternalSettings(client="scoring", target=server.target, timeout_s=5.0)
        _, topics, run_id = start(engine, external=ext)
        codec = get_codec("protobuf")
        p = Producer(producer_config(bootstrap))
        rng = np.random.default_rng(3)
        xs = {f"{run_id}-{i}": rng.random((1, 1, 784), dtype=np.float32) for i in range(10)}
        for i, (bid, x) in enumerate(xs.items()):
            value, h = codec.encode_batch(make_batch(run_id, i, x))
            p.produce(topics.input, value, bid.encode(), partition=i % 2, headers=h or None)
        p.flush(10)
        msgs = read_topics(bootstrap, [topics.output], lambda got: len(got) >= len(xs))
    finally:
        server.stop()
    scored = {s.batch_id: s for s in (codec.decode_scored(m.value(), m.headers()) for m in msgs)}
    assert set(scored) == set(xs)
    ref = reference(models_dir)
    for bid, s in scored.items():
        assert s.facts.backend == "scoring" and s.facts.server == "crayfish-scoring"
        assert s.facts.server_inference_ns > 0
        np.testing.assert_allclose(from_tensor(s.output), ref(xs[bid]), rtol=1e-4, atol=1e-5)


def check_registration(name: str, spec: EngineSpec, repo_root) -> None:
    """The entry: its own name, an importable module, a real environment, an options class that
    takes its defaults and rejects an unknown key naming it."""
    assert spec.name == name
    assert importlib.util.find_spec(spec.module) is not None, spec.module
    assert spec.environment == "core" or os.path.isfile(os.path.join(repo_root, "envs", spec.environment,
                                                                     "requirements.txt"))
    spec.check_options({}, parallelism=1)
    try:
        spec.check_options({"no_such_option": 1})
    except ValueError as exc:
        assert str(exc).startswith(f"engine_options.no_such_option: unknown option of the {name} engine"), exc
    else:
        raise AssertionError(f"{name}: an unknown engine option was accepted")
