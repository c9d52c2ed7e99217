"""Engine ``flink`` beyond the conformance suite: options, operator parallelism, stop, standalone job.

Real PyFlink (its own environment, .envs/flink), real broker, real onnxruntime.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid

import numpy as np
import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from crayfish.codec import get_codec
from crayfish.kafka import RunTopics, consumer_config, consumer_lag, create_topics, delete_topics, producer_config
from crayfish.tensor import to_tensor
from crayfish.v1 import batch_pb2
from services.runner.processes import Service, wait_engine_ready
from sps_workers import ENGINES
from sps_workers.flink.job import load_settings
from sps_workers.flink.options import FlinkOptionsError, parse_options
from sps_workers.settings import WorkerSettings

BASE = {"bootstrap": "127.0.0.1:9", "input_topic": "in", "output_topic": "out", "dead_letter_topic": "dlq",
        "consumer_group": "g", "model": "ffnn", "worker_id": "flink"}


@pytest.fixture(scope="module")
def flink_python():
    from services.runner.environments import python_for

    return python_for("flink")


# ---------------------------------------------------------------------------- options (no engine)

@pytest.mark.parametrize("options, field", [
    ({"jobmanager": "localhost"}, "engine_options.jobmanager"),
    ({"jobmanager": "host:99999"}, "engine_options.jobmanager"),
    ({"jobmanager": ":8081"}, "engine_options.jobmanager"),
    ({"operator_parallelism": [2, 1]}, "engine_options.operator_parallelism"),
    ({"operator_parallelism": [2, 0, 2]}, "engine_options.operator_parallelism"),
    ({"bundle_time_ms": 0}, "engine_options.bundle_time_ms"),
    ({"checkpoint_interval": 5}, "engine_options.checkpoint_interval"),
])
def test_bad_options_name_the_field(options, field):
    with pytest.raises(FlinkOptionsError, match=re.escape(field)):
        parse_options(options)


def test_good_options():
    o = parse_options({"jobmanager": "jm.example:8081", "operator_parallelism": [4, 2, 4]})
    assert o.host_port == ("jm.example", 8081) and o.parallelisms(2) == (4, 2, 4)
    assert parse_options({}).parallelisms(3) == (3, 3, 3)


def test_scoring_parallelism_must_equal_mp():
    doc = {**BASE, "parallelism": 2, "engine_options": {"operator_parallelism": [4, 3, 4]}}
    with pytest.raises(FlinkOptionsError, match=r"operator_parallelism.*must equal parallelism \(2\)"):
        load_settings(json.dumps(doc))


def test_worker_rejects_a_bad_jobmanager_before_starting_anything(flink_python, tmp_path):
    cfg = tmp_path / "w.json"
    cfg.write_text(json.dumps({**BASE, "engine_options": {"jobmanager": "nohost"}}))
    proc = subprocess.run([flink_python, "-m", "sps_workers.flink", "--config", f"@{cfg}"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "engine_options.jobmanager" in proc.stderr and "host:port" in proc.stderr


# ---------------------------------------------------------------------------- against the broker

def _batch(run_id, seq):
    now = time.time_ns()
    b = batch_pb2.DataBatch(batch_id=f"{run_id}-{seq}", run_id=run_id, sequence=seq, intended_ns=now,
                            created_ns=now, model="ffnn")
    to_tensor(np.full((1, 1, 784), seq / 100, dtype=np.float32), b.input)
    return b


def _produce(bootstrap, topic, run_id, n, partitions):
    codec = get_codec("protobuf")
    p = Producer(producer_config(bootstrap))
    for i in range(n):
        value, h = codec.encode_batch(_batch(run_id, i))
        p.produce(topic, value, f"{run_id}-{i}".encode(), partition=i % partitions, headers=h or None)
    p.flush(10)


def _read_scored(bootstrap, topic, n, timeout_s=120):
    codec = get_codec("protobuf")
    c = Consumer(consumer_config(bootstrap, f"t-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    out, deadline = [], time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out += [codec.decode_scored(m.value(), m.headers()) for m in c.consume(100, timeout=0.2) if not m.error()]
    c.close()
    return out


def _start(bootstrap, models_dir, tmp_path, flink_python, parallelism=1, partitions=2, engine_options=None):
    run_id = uuid.uuid4().hex[:8]
    topics = RunTopics.for_run(run_id)
    create_topics(bootstrap, topics, partitions=partitions)
    ws = WorkerSettings(bootstrap=bootstrap, input_topic=topics.input, output_topic=topics.output,
                        dead_letter_topic=topics.dead_letter, consumer_group=f"w-{run_id}", model="ffnn",
                        models_dir=str(models_dir), parallelism=parallelism, worker_id="flink",
                        ready_file=str(tmp_path / f"{run_id}.ready"), engine_options=engine_options or {})
    cfg = tmp_path / f"{run_id}.json"
    cfg.write_text(ws.model_dump_json())
    svc = Service("flink-worker", ["-m", "sps_workers.flink", "--config", f"@{cfg}"], tmp_path / f"{run_id}.log",
                  python=flink_python)
    try:
        wait_engine_ready(ENGINES["flink"], ws, partitions, [svc], timeout_s=240)
    except Exception:
        svc.stop()
        delete_topics(bootstrap, topics)
        raise
    return svc, ws, topics, run_id


def _job_graph(svc) -> dict:
    line = next(ln for ln in svc.log_tail(100_000).splitlines() if "job graph " in ln)
    return json.loads(line.split("job graph ", 1)[1])


def test_operator_parallelism_is_applied_with_chaining_disabled(kafka_bootstrap, models_dir, tmp_path, flink_python):
    svc, ws, topics, run_id = _start(kafka_bootstrap, models_dir, tmp_path, flink_python, parallelism=2,
                                     partitions=3, engine_options={"operator_parallelism": [3, 2, 1]})
    try:
        graph = _job_graph(svc)
        by_role = {}
        for v in graph["vertices"]:
            name = v["name"]
            role = ("source" if name.startswith("Source: crayfish_input") else
                    "scoring" if name == "crayfish-scoring" else
                    "sink" if name.startswith("crayfish_output") and "Writer" in name else None)
            if role:
                by_role[role] = v["parallelism"]
        # chaining disabled: source, scoring and sink are separate vertices, each at its own parallelism
        assert by_role == {"source": 3, "scoring": 2, "sink": 1}, graph
        n = 30
        _produce(kafka_bootstrap, topics.input, run_id, n, partitions=3)
        scored = _read_scored(kafka_bootstrap, topics.output, n)
        assert {s.batch_id for s in scored} == {f"{run_id}-{i}" for i in range(n)}
        assert {s.facts.worker_id for s in scored} == {"flink-0", "flink-1"}
    finally:
        svc.stop()
        delete_topics(kafka_bootstrap, topics)


def test_sigterm_stops_cleanly_commits_offsets_and_leaves_no_process(kafka_bootstrap, models_dir, tmp_path,
                                                                     flink_python):
    svc, ws, topics, run_id = _start(kafka_bootstrap, models_dir, tmp_path, flink_python)
    driver_pid = int(re.search(r"by driver pid (\d+)", svc.log_tail(100_000)).group(1))
    try:
        n = 25
        _produce(kafka_bootstrap, topics.input, run_id, n, partitions=2)
        assert len({s.batch_id for s in _read_scored(kafka_bootstrap, topics.output, n)}) == n
        assert any("java" in p.name() for p in _session(driver_pid)), "the mini-cluster JVM runs in the driver's session"
        t0 = time.monotonic()
        code = svc.stop()
        took = time.monotonic() - t0
        log = svc.log_tail(100_000)
        assert took < 20, f"stop took {took:.1f}s\n{log}"
        assert code == 0, log
        assert "stopped with savepoint" in log, log
        # every input offset committed by the final checkpoint: nothing would be re-read
        assert consumer_lag(kafka_bootstrap, ws.consumer_group, topics.input) == 0
        deadline = time.monotonic() + 5
        while (left := _session(driver_pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, [p.name() for p in left]
    finally:
        svc.stop()
        delete_topics(kafka_bootstrap, topics)


def _session(sid):
    """Live (not zombie) processes of a session."""
    out = []
    for p in psutil.process_iter():
        try:
            if _sid(p) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def _sid(p):
    try:
        return os.getsid(p.pid)
    except (ProcessLookupError, PermissionError, psutil.Error):
        return None


# ---------------------------------------------------------------------------- standalone (no Kafka)

def test_standalone_job_scores_the_expected_count(flink_python, models_dir, tmp_path):
    out = tmp_path / "standalone.json"
    cfg = {"model": "ffnn", "models_dir": str(models_dir), "parallelism": 2, "worker_id": "flink"}
    proc = subprocess.run([flink_python, "-m", "sps_workers.flink.standalone", "--config", json.dumps(cfg),
                           "--count", "400", "--out", str(out)], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["count"] == res["scored"] == 400
    assert res["throughput_bps"] > 0 and res["window_s"] > 0
    assert len(res["subtasks"]) == 2 and all(s["count"] > 0 for s in res["subtasks"])
    assert len({s["pid"] for s in res["subtasks"]}) == 2  # one Python worker process per subtask
