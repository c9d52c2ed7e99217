"""Ray engine specifics (sps_workers/ray), beyond the shared suite in test_engines.py: options
validated naming the field, a bad option failing before Ray starts, and a real run: mp chains of
actors in one consumer group, every Ray listener on loopback, SIGTERM drains and commits (a
restart in the same group scores only the new records) and leaves no Ray process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid

import psutil
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.support.kafka_io import read_scored, read_scored_to_end, send_batches
from tests.support.procs import loopback_listeners
from crayfish.kafka import RunTopics, consumer_config, create_topics, delete_topics
from crayfish.host.procs import Service, wait_file
from sps_workers import ENGINES
from sps_workers.options import EngineOptionsError
from sps_workers.ray.options import RayOptions
from sps_workers.settings import WorkerSettings

ENGINE = "ray"


def _ws(**kw) -> WorkerSettings:
    base = dict(bootstrap="127.0.0.1:1", input_topic="i", output_topic="o", dead_letter_topic="d",
                consumer_group="g", model="ffnn", worker_id=ENGINE)
    return WorkerSettings(**{**base, **kw})


def test_options_defaults_and_errors_name_the_field():
    opts = RayOptions.from_settings(_ws())
    assert opts.local and opts.max_in_flight == 4 and opts.scoring_cpus == 1.0
    for address in ("ray://127.0.0.1:10001", "head.example:6379", "auto"):
        assert RayOptions.from_settings(_ws(engine_options={"address": address})).address == address
    cases = {
        "engine_options.adress: unknown option of the ray engine (known: address, ": {"adress": "ray://h:1"},
        "engine_options.address: must be ray://host:port": {"address": "http://h:8265"},
        "engine_options.max_in_flight: Input should be greater than or equal to 1": {"max_in_flight": 0},
        "engine_options.max_in_flight: Input should be a valid integer": {"max_in_flight": True},
        "engine_options.scoring_cpus: Input should be greater than or equal to 0": {"scoring_cpus": -1},
        "engine_options.stop_timeout_s: Input should be greater than 0": {"stop_timeout_s": 0},
        "engine_options.runtime_env: Input should be a valid dictionary": {"runtime_env": "py_modules"},
        "engine_options.num_cpus: only applies to a local Ray": {"address": "ray://h:10001", "num_cpus": 4},
    }
    for message, options in cases.items():
        with pytest.raises(EngineOptionsError, match="^" + re.escape(message)):
            RayOptions.from_settings(_ws(engine_options=options))


def _is_ray(p: psutil.Process) -> bool:
    """A process of Ray's own (raylet, GCS server, Ray workers, dashboard, log monitor...)."""
    try:
        text = " ".join([p.name(), *p.cmdline()])
    except psutil.Error:
        return False
    return any(k in text for k in ("raylet", "gcs_server", "ray::", "ray/_private", "ray/dashboard",
                                   "default_worker.py", "log_monitor"))


def test_worker_rejects_a_bad_option_before_starting(tmp_path):
    from crayfish.host.envs import python_for

    ws = _ws(engine_options={"address": "nowhere"})
    # Watch the worker's process tree while it runs: a started Ray shows up there (its GCS server
    # and raylet are children of the driver) before the worker could exit.
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen([python_for(ENGINES[ENGINE].environment), "-m", ENGINES[ENGINE].module,
                                 "--config", ws.model_dump_json()], stdout=subprocess.DEVNULL, stderr=f,
                                start_new_session=True)
    ray = set()
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the worker did not exit within 120 s of a bad option"
            try:
                ray |= {(c.pid, c.name()) for c in psutil.Process(proc.pid).children(recursive=True) if _is_ray(c)}
            except psutil.Error:
                pass
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = err.read_text(errors="replace")
    assert proc.returncode == 2, stderr[-3000:]
    assert "ray worker: bad config: engine_options.address: must be ray://host:port" in stderr, stderr[-3000:]
    assert not ray, f"Ray was started before the option was rejected: {ray}"


def _committed(bootstrap, group, topic) -> dict[int, int]:
    c = Consumer(consumer_config(bootstrap, group, **{"enable.auto.commit": False}))
    md = c.list_topics(topic, timeout=10)
    got = c.committed([TopicPartition(topic, p) for p in md.topics[topic].partitions], timeout=10)
    c.close()
    return {tp.partition: tp.offset for tp in got}


@pytest.mark.kafka
def test_sigterm_drains_commits_and_leaves_nothing_behind(kafka_bootstrap, models_dir, tmp_path):
    from crayfish.host.envs import python_for

    run_id = uuid.uuid4().hex[:8]
    topics = RunTopics.for_run(run_id)
    create_topics(kafka_bootstrap, topics, partitions=2)
    group = f"w-{run_id}"
    python = python_for(ENGINES[ENGINE].environment)
    started = []

    def start(name, options):
        ws = WorkerSettings(bootstrap=kafka_bootstrap, input_topic=topics.input, output_topic=topics.output,
                            dead_letter_topic=topics.dead_letter, consumer_group=group, model="ffnn",
                            models_dir=str(models_dir), parallelism=2, worker_id=ENGINE,
                            ready_file=str(tmp_path / f"{name}.ready"), engine_options=options)
        cfg = tmp_path / f"{name}.json"
        cfg.write_text(ws.model_dump_json())
        svc = Service(f"{ENGINE}-worker", ["-m", ENGINES[ENGINE].module, "--config", f"@{cfg}"],
                      tmp_path / f"{name}.log", python=python)
        started.append(svc)
        ENGINES[ENGINE].wait_ready(ws, 2, [svc], timeout_s=240)
        return svc

    try:
        svc = start("first", {"max_in_flight": 2})
        wait_file(tmp_path / "first.ready", [svc], 30)   # the driver also marks readiness (group complete)
        send_batches(kafka_bootstrap, topics.input, run_id, range(30))
        got = [(s.batch_id, s.facts.worker_id) for s in read_scored(kafka_bootstrap, topics.output, 30)]
        assert {b for b, _ in got} == {f"{run_id}-{i}" for i in range(30)}
        assert {w for _, w in got} == {"ray-0", "ray-1"}

        tree = psutil.Process(svc.proc.pid).children(recursive=True)
        assert any("raylet" in p.name() for p in tree), [p.name() for p in tree]
        loopback_listeners(svc.proc.pid)   # Ray's GCS, raylet, object manager...: some, all on loopback

        # Graceful: exit code 0 (a stop that needs SIGKILL returns -9), every Ray process gone and
        # the offsets of everything scored committed (checked below).
        assert svc.stop(timeout_s=60) == 0, svc.log_tail()
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
        assert _committed(kafka_bootstrap, group, topics.input) == {0: 15, 1: 15}

        # Same group, strictly one batch in flight: only the new records are scored.
        svc = start("second", {"max_in_flight": 1, "scoring_cpus": 0.5})
        send_batches(kafka_bootstrap, topics.input, run_id, range(30, 40))
        assert len(read_scored(kafka_bootstrap, topics.output, 40)) >= 40
        # Drained and stopped: nothing more can come, so the output topic up to its high-water mark
        # shows any batch scored twice, however late.
        assert svc.stop(timeout_s=60) == 0, svc.log_tail()
        assert _committed(kafka_bootstrap, group, topics.input) == {0: 20, 1: 20}
        ids = [s.batch_id for s in read_scored_to_end(kafka_bootstrap, topics.output)]
        assert set(ids) == {f"{run_id}-{i}" for i in range(40)}
        assert len(ids) == 40, f"scored twice: {sorted(i for i in set(ids) if ids.count(i) > 1)}"
    finally:
        for svc in started:
            svc.stop()
        delete_topics(kafka_bootstrap, topics)


@pytest.fixture
def ray_cluster():
    """A real Ray head (``ray start --head --block``) on loopback, in a session of its own; yields
    (gcs host:port, ray:// address, environment a client needs)."""
    import os
    import secrets
    import shutil
    import signal
    import socket
    import tempfile

    from crayfish.host.envs import env_dir, python_for

    python_for(ENGINES[ENGINE].environment)

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    gcs, client = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="crf-ray-", dir="/tmp")   # Ray's socket paths must stay short
    env = {"RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen([str(env_dir(ENGINES[ENGINE].environment) / "bin" / "ray"), "start", "--head", "--block",
                             "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--ray-client-server-port={client}",
                             "--include-dashboard=false", "--num-cpus=4", f"--temp-dir={temp}"],
                            env={**os.environ, **env, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", client), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None and time.monotonic() < deadline, "ray head did not start"
                time.sleep(0.2)
        yield f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{client}", env
    finally:
        head.send_signal(signal.SIGTERM)   # `ray start --block` stops its node on SIGTERM
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait(10)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.kafka
@pytest.mark.parametrize("kind", ["ray-client", "gcs"])
def test_address_runs_the_chains_on_an_existing_cluster(kafka_bootstrap, models_dir, tmp_path, ray_cluster, kind):
    from crayfish.host.envs import python_for

    gcs, client, env = ray_cluster
    run_id = uuid.uuid4().hex[:8]
    topics = RunTopics.for_run(run_id)
    create_topics(kafka_bootstrap, topics, partitions=2)
    ws = WorkerSettings(bootstrap=kafka_bootstrap, input_topic=topics.input, output_topic=topics.output,
                        dead_letter_topic=topics.dead_letter, consumer_group=f"w-{run_id}", model="ffnn",
                        models_dir=str(models_dir), parallelism=2, worker_id=ENGINE,
                        engine_options={"address": client if kind == "ray-client" else gcs})
    svc = Service(f"{ENGINE}-worker", ["-m", ENGINES[ENGINE].module, "--config", ws.model_dump_json()],
                  tmp_path / "worker.log", python=python_for(ENGINES[ENGINE].environment), env=env)
    try:
        ENGINES[ENGINE].wait_ready(ws, 2, [svc], timeout_s=180)
        send_batches(kafka_bootstrap, topics.input, run_id, range(20))
        got = [(s.batch_id, s.facts.worker_id) for s in read_scored(kafka_bootstrap, topics.output, 20)]
        assert {b for b, _ in got} == {f"{run_id}-{i}" for i in range(20)}
        assert {w for _, w in got} == {"ray-0", "ray-1"}
        assert svc.stop(timeout_s=30) == 0, svc.log_tail()
        assert "ray up in" in svc.log_tail()
        assert _committed(kafka_bootstrap, f"w-{run_id}", topics.input) == {0: 10, 1: 10}
    finally:
        svc.stop()
        delete_topics(kafka_bootstrap, topics)
