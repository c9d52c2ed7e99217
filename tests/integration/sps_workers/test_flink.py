"""Engine ``flink`` beyond the conformance suite: options, operator parallelism, stop, standalone job.

Real PyFlink (its own environment, .envs/flink), real broker, real onnxruntime.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
import uuid

import psutil
import pytest

from crayfish.kafka import RunTopics, consumer_lag, create_topics, delete_topics
from crayfish.host.procs import Service
from sps_workers import ENGINES
from sps_workers.flink.job import load_settings
from sps_workers.flink.options import FlinkOptions
from sps_workers.options import EngineOptionsError
from sps_workers.settings import WorkerSettings
from tests.support.kafka_io import read_scored, send_batches
from tests.support.procs import is_loopback, listening, loopback_listeners

BASE = {"bootstrap": "127.0.0.1:9", "input_topic": "in", "output_topic": "out", "dead_letter_topic": "dlq",
        "consumer_group": "g", "model": "ffnn", "worker_id": "flink"}


@pytest.fixture(scope="module")
def flink_python():
    from crayfish.host.envs import python_for

    return python_for("flink")


# ---------------------------------------------------------------------------- options (no engine)

@pytest.mark.parametrize("options, field", [
    ({"jobmanager": "localhost"}, "engine_options.jobmanager"),
    ({"jobmanager": "host:99999"}, "engine_options.jobmanager"),
    ({"jobmanager": ":8081"}, "engine_options.jobmanager"),
    ({"operator_parallelism": [2, 1]}, "engine_options.operator_parallelism"),
    ({"operator_parallelism": [2, 0, 2]}, "engine_options.operator_parallelism"),
    ({"bundle_time_ms": 0}, "engine_options.bundle_time_ms"),
    ({"buffer_timeout_ms": -1}, "engine_options.buffer_timeout_ms"),
    ({"checkpoint_interval": 5}, "engine_options.checkpoint_interval: unknown option of the flink engine"),
    ({"bundle_size": "1000"}, "engine_options.bundle_size: Input should be a valid integer"),
])
def test_bad_options_name_the_field(options, field):
    with pytest.raises(EngineOptionsError, match="^" + re.escape(field)):
        FlinkOptions.parse(options)


def test_good_options():
    o = FlinkOptions.parse({"jobmanager": "jm.example:8081", "operator_parallelism": [4, 2, 4]}, parallelism=2)
    assert o.host_port == ("jm.example", 8081) and o.parallelisms(2) == (4, 2, 4)
    assert FlinkOptions.parse({}).parallelisms(3) == (3, 3, 3)
    assert FlinkOptions.parse({}).buffer_timeout_ms == 5  # not Flink's 100 ms: see the package docstring


def test_scoring_parallelism_must_equal_mp():
    doc = {**BASE, "parallelism": 2, "engine_options": {"operator_parallelism": [4, 3, 4]}}
    with pytest.raises(EngineOptionsError, match=r"^engine_options\.operator_parallelism: the scoring entry \(3\) "
                                                 r"must equal parallelism \(2\)$"):
        load_settings(json.dumps(doc))


def test_worker_rejects_a_bad_jobmanager_before_starting_anything(flink_python, tmp_path):
    cfg = tmp_path / "w.json"
    cfg.write_text(json.dumps({**BASE, "engine_options": {"jobmanager": "nohost"}}))
    proc = subprocess.run([flink_python, "-m", "sps_workers.flink", "--config", f"@{cfg}"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "engine_options.jobmanager" in proc.stderr and "host:port" in proc.stderr


# ---------------------------------------------------------------------------- against the broker

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
        ENGINES["flink"].wait_ready(ws, partitions, [svc], timeout_s=240)
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
        send_batches(kafka_bootstrap, topics.input, run_id, range(n), partitions=3)
        scored = read_scored(kafka_bootstrap, topics.output, n)
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
        send_batches(kafka_bootstrap, topics.input, run_id, range(n), partitions=2)
        assert len({s.batch_id for s in read_scored(kafka_bootstrap, topics.output, n)}) == n
        session = _session(driver_pid)
        assert any("java" in p.name() for p in session), "the mini-cluster JVM runs in the driver's session"
        # every listener of the job (JVM: JobManager, TaskManager, REST, blob server, Beam gRPC servers
        # of the Python workers; the Python workers themselves) is on loopback
        addrs = [(p.name(), p.pid, a) for p in session for a in listening(p.pid, tree=False)]
        assert len(addrs) >= 4 and all(is_loopback(a.ip) for _, _, a in addrs), (addrs, [p.cmdline() for p in session])
        # Graceful: exit code 0 (a stop that needs SIGKILL returns -9), the savepoint, the commits and
        # no process of the job's session left.
        code = svc.stop(timeout_s=60)
        log = svc.log_tail(100_000)
        assert code == 0, log
        assert "stopped with savepoint" in log, log
        # every input offset committed by the final checkpoint: nothing would be re-read
        assert consumer_lag(kafka_bootstrap, ws.consumer_group, topics.input) == 0
        deadline = time.monotonic() + 30   # a wait for the processes to exit, not a duration check
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


# ---------------------------------------------------------------------------- a Flink session cluster

def _java_children(pid):
    return [p.pid for p in psutil.Process(pid).children(recursive=True) if "java" in p.name()]


def test_job_runs_on_a_session_cluster(kafka_bootstrap, models_dir, tmp_path, flink_python):
    """engine_options.jobmanager: the job goes to a running cluster (JobManager + TaskManager started
    from the wheel's own scripts by sps_workers.flink.cluster), not to a mini-cluster in the driver."""
    ready = tmp_path / "cluster.ready"
    cluster = Service("flink-cluster", ["-m", "sps_workers.flink.cluster", "--slots", "2", "--dir",
                                        str(tmp_path / "cluster"), "--ready-file", str(ready)],
                      tmp_path / "cluster.log", python=flink_python)
    try:
        deadline = time.monotonic() + 180
        while not ready.exists() and time.monotonic() < deadline:
            cluster.check_alive()
            time.sleep(0.5)
        assert ready.exists(), cluster.log_tail()
        jm = ready.read_text()
        cluster_jvms = _java_children(cluster.proc.pid)
        assert len(cluster_jvms) == 2, cluster_jvms  # JobManager and TaskManager
        listeners = {tuple(a) for pid in cluster_jvms for a in listening(pid, tree=False)}
        assert int(jm.rsplit(":", 1)[1]) in {port for _, port in listeners}, listeners  # REST
        # the JobManager process listens on loopback only (REST, RPC, blob server)
        jm_pid = next(p for p in cluster_jvms if "StandaloneSessionClusterEntrypoint" in " ".join(psutil.Process(p).cmdline()))
        loopback_listeners(jm_pid, tree=False)

        svc, ws, topics, run_id = _start(kafka_bootstrap, models_dir, tmp_path, flink_python, parallelism=2,
                                         engine_options={"jobmanager": jm})
        try:
            graph = _job_graph(svc)
            assert graph["rest"] == jm
            n = 20
            send_batches(kafka_bootstrap, topics.input, run_id, range(n), partitions=2)
            scored = read_scored(kafka_bootstrap, topics.output, n)
            assert {s.batch_id for s in scored} == {f"{run_id}-{i}" for i in range(n)}
            assert {s.facts.worker_id for s in scored} == {"flink-0", "flink-1"}
            # the scoring subtasks' Python workers are children of the cluster's TaskManager
            tm_pid = next(p for p in cluster_jvms if "TaskManagerRunner" in " ".join(psutil.Process(p).cmdline()))
            workers = [p for p in psutil.Process(tm_pid).children(recursive=True) if _scoring_worker(p)]
            assert len(workers) >= 2, [p.cmdline() for p in psutil.Process(tm_pid).children(recursive=True)]
            # the TaskManager's Beam gRPC servers for those workers listen on loopback too
            tm_addrs = listening(tm_pid)
            assert len(tm_addrs) >= 4 and all(is_loopback(a.ip) for a in tm_addrs), tm_addrs
            # ... and none under the driver: it runs no mini-cluster
            driver_tree = psutil.Process(svc.proc.pid).children(recursive=True)
            assert not [p for p in driver_tree if _scoring_worker(p)]
            assert svc.stop() == 0, svc.log_tail()
            with urllib.request.urlopen(f"http://{jm}/jobs/{graph['job_id']}", timeout=5) as resp:
                assert json.loads(resp.read())["state"] == "FINISHED"  # stopped with a savepoint, not cancelled
        finally:
            svc.stop()
            delete_topics(kafka_bootstrap, topics)
    finally:
        assert cluster.stop() == 0, cluster.log_tail()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in cluster_jvms)


def _scoring_worker(p) -> bool:
    try:
        return "pyflink.fn_execution" in " ".join(p.cmdline())
    except psutil.Error:
        return False
