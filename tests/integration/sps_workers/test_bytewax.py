"""Bytewax engine specifics (sps_workers/bytewax), beyond the shared suite in test_engines.py: options
validation, a clean SIGTERM stop of a multi-process cluster whose TCP ports bind loopback only,
worker threads as distinct workers, and the delivery guarantee without recovery (at-least-once: a
restart reads the input topic again from the start)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import psutil
import pytest

from tests.support.kafka_io import read_scored, read_scored_to_end, send_batches
from tests.support.procs import is_loopback, listening
from crayfish.kafka import RunTopics, create_topics, delete_topics
from crayfish.host.procs import Service
from sps_workers import ENGINES
from sps_workers.bytewax.options import BytewaxOptions
from sps_workers.options import EngineOptionsError
from sps_workers.settings import WorkerSettings

ENGINE = "bytewax"


def test_options_are_validated_naming_the_field():
    assert BytewaxOptions.parse({}).workers_per_process == 1
    assert BytewaxOptions.parse({"workers_per_process": 2}, parallelism=4).workers_per_process == 2
    with pytest.raises(EngineOptionsError, match=r"^engine_options\.workers: unknown option of the bytewax engine"):
        BytewaxOptions.parse({"workers": 2})
    with pytest.raises(EngineOptionsError, match=r"^engine_options\.epoch_interval_s: Input should be greater than 0"):
        BytewaxOptions.parse({"epoch_interval_s": 0})
    with pytest.raises(EngineOptionsError, match=r"^engine_options\.workers_per_process: 2 does not divide parallelism 3"):
        BytewaxOptions.parse({"workers_per_process": 2}, parallelism=3)


def test_worker_rejects_a_bad_option_before_starting():
    from crayfish.host.envs import python_for

    ws = WorkerSettings(bootstrap="127.0.0.1:1", input_topic="i", output_topic="o", dead_letter_topic="d",
                       consumer_group="g", model="ffnn", worker_id=ENGINE, parallelism=3,
                       engine_options={"workers_per_process": 2})
    proc = subprocess.run([python_for(ENGINES[ENGINE].environment), "-m", ENGINES[ENGINE].module,
                           "--config", ws.model_dump_json()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "bytewax worker: bad config: engine_options.workers_per_process: 2 does not divide parallelism 3" \
        in proc.stderr




@pytest.fixture
def bytewax_worker(kafka_bootstrap, models_dir, tmp_path):
    from crayfish.host.envs import python_for

    started, made = [], []

    def start(parallelism=1, engine_options=None, run_id=None):
        fresh = run_id is None
        run_id = run_id or uuid.uuid4().hex[:8]
        topics = RunTopics.for_run(run_id)
        if fresh:
            create_topics(kafka_bootstrap, topics, partitions=2)
            made.append(topics)
        n = len(started)
        ws = WorkerSettings(bootstrap=kafka_bootstrap, input_topic=topics.input, output_topic=topics.output,
                            dead_letter_topic=topics.dead_letter, consumer_group=f"w-{run_id}", model="ffnn",
                            models_dir=str(models_dir), parallelism=parallelism, worker_id=ENGINE,
                            engine_options=engine_options or {}, ready_file=str(tmp_path / f"ready-{run_id}-{n}"))
        cfg = tmp_path / f"worker-{run_id}-{n}.json"
        cfg.write_text(ws.model_dump_json())
        spec = ENGINES[ENGINE]
        svc = Service(f"{ENGINE}-worker", ["-m", spec.module, "--config", f"@{cfg}"],
                      tmp_path / f"worker-{run_id}-{n}.log", python=python_for(spec.environment))
        started.append(svc)
        spec.wait_ready(ws, 2, [svc], timeout_s=240)
        assert Path(ws.ready_file).exists()
        return svc, topics, run_id

    yield start
    for svc in started:
        svc.stop()
    for topics in made:
        delete_topics(kafka_bootstrap, topics)


def _cluster_links(procs) -> list:
    """(pid, local, remote) of every established TCP connection between two of ``procs`` (both
    ends belong to them: the cluster's own links, not the Kafka clients' connections)."""
    conns = {}
    for p in procs:
        try:
            conns[p.pid] = [c for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED and c.raddr]
        except psutil.Error:
            conns[p.pid] = []
    local_ends = {(c.laddr.ip, c.laddr.port) for cs in conns.values() for c in cs}
    return [(pid, c.laddr, c.raddr) for pid, cs in conns.items() for c in cs
            if (c.raddr.ip, c.raddr.port) in local_ends]


def test_cluster_binds_loopback_only_and_stops_cleanly_on_sigterm(kafka_bootstrap, bytewax_worker):
    svc, topics, run_id = bytewax_worker(parallelism=2)
    children = [c for c in psutil.Process(svc.proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
    assert len(children) == 2, "parallelism 2 = two Bytewax processes"
    # The two processes form one timely cluster over TCP. Timely accepts its peers' connections at
    # start-up and then closes its listening socket, so "nothing listens" alone would pass for any
    # address: the check is on the cluster's own links, which must exist and be 127.0.0.1 at both
    # ends; and no listener, if one is open at all, beyond loopback.
    links = _cluster_links(children)
    assert links, f"no TCP link between the Bytewax processes {[c.pid for c in children]}"
    assert all(ip == "127.0.0.1" for link in links for ip in (link[1].ip, link[2].ip)), links
    assert not [a for a in listening(svc.proc.pid) if not is_loopback(a.ip)], listening(svc.proc.pid)
    send_batches(kafka_bootstrap, topics.input, run_id, range(20))
    scored = read_scored(kafka_bootstrap, topics.output, 20)
    assert {s.facts.worker_id for s in scored} == {"bytewax-0", "bytewax-1"}
    # Clean: exit code 0 (Service.stop SIGKILLs what has not exited by the deadline: -9), no panic,
    # nothing left. The deadline is generous: a loaded 2-core machine ends the epoch slowly.
    code = svc.stop(timeout_s=90)
    assert code == 0, svc.log_tail()
    assert "panicked" not in svc.log_tail(20000)
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"


def test_worker_threads_are_distinct_workers_in_one_process(kafka_bootstrap, bytewax_worker):
    svc, topics, run_id = bytewax_worker(parallelism=2, engine_options={"workers_per_process": 2})
    assert psutil.Process(svc.proc.pid).children() == []
    assert listening(svc.proc.pid) == [], "one process needs no network"
    send_batches(kafka_bootstrap, topics.input, run_id, range(20))
    assert len(read_scored(kafka_bootstrap, topics.output, 20)) >= 20
    # Stopped cleanly, nothing more can come: the whole output topic, read to its high-water mark,
    # holds each batch once (a copy scored by both threads cannot arrive later, unseen).
    assert svc.stop(timeout_s=90) == 0, svc.log_tail()
    scored = read_scored_to_end(kafka_bootstrap, topics.output)
    assert sorted(s.batch_id for s in scored) == sorted(f"{run_id}-{i}" for i in range(20))
    assert {s.facts.worker_id for s in scored} == {"bytewax-0", "bytewax-1"}


def test_without_recovery_a_restart_reads_the_topic_again(kafka_bootstrap, bytewax_worker):
    """The documented guarantee: at-least-once. Nothing is committed; a restart re-scores everything."""
    svc, topics, run_id = bytewax_worker()
    send_batches(kafka_bootstrap, topics.input, run_id, range(6))
    assert len(read_scored(kafka_bootstrap, topics.output, 6)) == 6
    assert svc.stop(timeout_s=90) == 0, svc.log_tail()
    again, _, _ = bytewax_worker(run_id=run_id)
    assert len(read_scored(kafka_bootstrap, topics.output, 12)) >= 12
    assert again.stop(timeout_s=90) == 0, again.log_tail()   # nothing more can come: read up to the high-water mark
    ids = [s.batch_id for s in read_scored_to_end(kafka_bootstrap, topics.output)]
    assert sorted(ids) == sorted([f"{run_id}-{i}" for i in range(6)] * 2)
