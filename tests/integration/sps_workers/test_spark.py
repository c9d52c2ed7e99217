"""Spark engine specifics (sps_workers/spark), beyond the shared suite in test_engines.py: options
validated naming the field, the Kafka connector jars matched to the pinned pyspark, a bad option
failing before the JVM starts, and a real run: SIGTERM drains and stops the whole process tree,
and a restart on the same checkpoint resumes after the committed offsets (nothing scored twice)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.support.kafka_io import read_scored, read_scored_to_end, send_batches
from tests.support.procs import loopback_listeners
from crayfish.kafka import RunTopics, create_topics, delete_topics
from crayfish.host.procs import Service
from sps_workers import ENGINES
from sps_workers.settings import WorkerSettings
from sps_workers.spark.jars import ARTIFACTS, POM, ensure_jars
from sps_workers.options import EngineOptionsError
from sps_workers.spark.options import SparkOptions

ENGINE = "spark"
REPO = Path(__file__).resolve().parents[3]


def _ws(**kw) -> WorkerSettings:
    base = dict(bootstrap="127.0.0.1:1", input_topic="i", output_topic="o", dead_letter_topic="d",
                consumer_group="g", model="ffnn", worker_id=ENGINE)
    return WorkerSettings(**{**base, **kw})


def test_options_defaults_and_errors_name_the_field():
    opts = SparkOptions.from_settings(_ws(parallelism=3))
    assert opts.master == "local[3]" and opts.trigger_ms == 0 and opts.driver_host == "127.0.0.1"
    for master in ("local[2,3]", "local[*]", "spark://h1:7077,h2:7077", "k8s://https://k:6443", "yarn"):
        assert SparkOptions.from_settings(_ws(engine_options={"master": master})).master == master
    cases = {
        "engine_options.mastr: unknown option of the spark engine (known: master, ": {"mastr": "local[1]"},
        "engine_options.master: must be a Spark master URL": {"master": "localhost:7077"},
        "engine_options.trigger_ms: Input should be greater than or equal to 0": {"trigger_ms": -1},
        "engine_options.arrow_batch_records: Input should be greater than or equal to 1": {"arrow_batch_records": 0},
        "engine_options.async_progress: Input should be a valid boolean": {"async_progress": "yes"},
        "engine_options.stop_timeout_s: Input should be greater than 0": {"stop_timeout_s": 0},
        "engine_options.conf: keys must be Spark conf keys": {"conf": {"driver.memory": "1g"}},
    }
    for message, options in cases.items():
        with pytest.raises(EngineOptionsError, match="^" + re.escape(message)):
            SparkOptions.from_settings(_ws(engine_options=options))


def _pinned_pyspark() -> str:
    text = (REPO / "envs" / "spark" / "requirements.txt").read_text()
    return re.search(r"^pyspark==(\S+)", text, re.M).group(1)


def test_connector_jars_match_the_pinned_pyspark():
    version = _pinned_pyspark()
    assert f"<spark.version>{version}</spark.version>" in POM.read_text()
    jars = ensure_jars(version)
    names = [j.name for j in jars]
    assert f"spark-sql-kafka-0-10_2.13-{version}.jar" in names
    assert f"spark-token-provider-kafka-0-10_2.13-{version}.jar" in names
    assert all(any(n.startswith(a + "-") for n in names) for a in ARTIFACTS)
    assert len(jars) == len(ARTIFACTS), names   # Spark's own jars come with pyspark, not twice


def test_worker_rejects_a_bad_option_before_starting(tmp_path):
    from crayfish.host.envs import python_for

    ws = _ws(engine_options={"master": "nowhere"})
    # Watch the worker's process tree while it runs: a started JVM (spark-submit's java) shows up
    # there before the worker could exit.
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen([python_for(ENGINES[ENGINE].environment), "-m", ENGINES[ENGINE].module,
                                 "--config", ws.model_dump_json()], stdout=subprocess.DEVNULL, stderr=f,
                                start_new_session=True)
    jvms = set()
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the worker did not exit within 120 s of a bad option"
            try:
                jvms |= {(c.pid, _cmdline(c)[:120]) for c in psutil.Process(proc.pid).children(recursive=True)
                         if "java" in c.name() or "spark-submit" in _cmdline(c)}
            except psutil.Error:
                pass
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = err.read_text(errors="replace")
    assert proc.returncode == 2, stderr[-3000:]
    assert "spark worker: bad config: engine_options.master: must be a Spark master URL" in stderr, stderr[-3000:]
    assert not jvms, f"a JVM was started before the option was rejected: {jvms}"


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""




@pytest.mark.kafka
def test_sigterm_drains_and_a_restart_resumes_from_the_checkpoint(kafka_bootstrap, models_dir, tmp_path):
    from crayfish.host.envs import python_for

    run_id = uuid.uuid4().hex[:8]
    topics = RunTopics.for_run(run_id)
    create_topics(kafka_bootstrap, topics, partitions=2)
    checkpoint = tmp_path / "checkpoint"
    python = python_for(ENGINES[ENGINE].environment)
    started = []

    def start(name, options):
        ws = WorkerSettings(bootstrap=kafka_bootstrap, input_topic=topics.input, output_topic=topics.output,
                            dead_letter_topic=topics.dead_letter, consumer_group=f"w-{run_id}", model="ffnn",
                            models_dir=str(models_dir), parallelism=2, worker_id=ENGINE,
                            ready_file=str(tmp_path / f"{name}.ready"),
                            engine_options={"checkpoint_dir": str(checkpoint), **options})
        cfg = tmp_path / f"{name}.json"
        cfg.write_text(ws.model_dump_json())
        svc = Service(f"{ENGINE}-worker", ["-m", ENGINES[ENGINE].module, "--config", f"@{cfg}"],
                      tmp_path / f"{name}.log", python=python)
        started.append(svc)
        ENGINES[ENGINE].wait_ready(ws, 2, [svc], timeout_s=240)
        return svc

    try:
        svc = start("first", {"arrow_batch_records": 4})
        tree = psutil.Process(svc.proc.pid).children(recursive=True)
        assert any("java" in p.name() for p in tree), [p.name() for p in tree]
        loopback_listeners(svc.proc.pid)   # the driver JVM's RPC, block manager, UI...: some, all loopback
        send_batches(kafka_bootstrap, topics.input, run_id, range(20))
        first = [s.batch_id for s in read_scored(kafka_bootstrap, topics.output, 20)]
        assert set(first) == {f"{run_id}-{i}" for i in range(20)}
        # Graceful: exit code 0 (a stop that needs SIGKILL returns -9), the query's own "stopped in"
        # line, and no process of the tree left.
        code = svc.stop(timeout_s=60)
        assert code == 0, svc.log_tail()
        gone, alive = psutil.wait_procs(tree, timeout=10)
        assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
        assert "stopped in" in svc.log_tail()

        # Same checkpoint, other knobs: resumes after the committed offsets of the first run.
        svc = start("second", {"async_progress": True, "warmup": False, "trigger_ms": 50, "master": "local[2,2]"})
        send_batches(kafka_bootstrap, topics.input, run_id, range(20, 30))
        assert len(read_scored(kafka_bootstrap, topics.output, 30)) >= 30
        # Stopped (drained): nothing more can come, so the output topic up to its high-water mark
        # shows any batch scored twice, however late.
        assert svc.stop(timeout_s=60) == 0, svc.log_tail()
        ids = [s.batch_id for s in read_scored_to_end(kafka_bootstrap, topics.output)]
        assert set(ids) == {f"{run_id}-{i}" for i in range(30)}
        assert len(ids) == 30, f"scored twice: {sorted(i for i in set(ids) if ids.count(i) > 1)}"
    finally:
        for svc in started:
            svc.stop()
        delete_topics(kafka_bootstrap, topics)


@pytest.mark.kafka
def test_runs_on_a_spark_cluster_master(kafka_bootstrap, models_dir, tmp_path):
    """master = local-cluster[2,1,1024]: a standalone master and two worker JVMs with one executor
    each (as on a real cluster: the connector jars and the Python scoring travel to the executors)."""
    from crayfish.host.envs import python_for

    run_id = uuid.uuid4().hex[:8]
    topics = RunTopics.for_run(run_id)
    create_topics(kafka_bootstrap, topics, partitions=2)
    ws = WorkerSettings(bootstrap=kafka_bootstrap, input_topic=topics.input, output_topic=topics.output,
                        dead_letter_topic=topics.dead_letter, consumer_group=f"w-{run_id}", model="ffnn",
                        models_dir=str(models_dir), parallelism=2, worker_id=ENGINE,
                        ready_file=str(tmp_path / "worker.ready"),
                        engine_options={"master": "local-cluster[2,1,1024]"})
    svc = Service(f"{ENGINE}-worker", ["-m", ENGINES[ENGINE].module, "--config", ws.model_dump_json()],
                  tmp_path / "worker.log", python=python_for(ENGINES[ENGINE].environment))
    try:
        ENGINES[ENGINE].wait_ready(ws, 2, [svc], timeout_s=240)
        tree = psutil.Process(svc.proc.pid).children(recursive=True)
        executors = [p for p in tree if "CoarseGrainedExecutorBackend" in _cmdline(p)]
        assert len(executors) == 2, [_cmdline(p)[:120] for p in tree]
        loopback_listeners(svc.proc.pid)   # master, workers, executors, driver: some, all on loopback
        send_batches(kafka_bootstrap, topics.input, run_id, range(20))
        ids = [s.batch_id for s in read_scored(kafka_bootstrap, topics.output, 20)]
        assert set(ids) == {f"{run_id}-{i}" for i in range(20)}
        assert svc.stop(timeout_s=30) == 0, svc.log_tail()
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
    finally:
        svc.stop()
        delete_topics(kafka_bootstrap, topics)
