"""Generators and collectors that join a run from other hosts (experiment ``hosts``, docs/clusters.md, "Load from several hosts"),
through the real parts: the session's broker, the runner in a thread, and ``crayfish generator
--join`` / ``crayfish collector --join`` processes that act as the hosts (each with a host name of
its own). The run id is read where a user's script would read it: the runner's announcement on the
join topic."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from crayfish.run_control import (
    ControlChannel,
    announce,
    control_topic,
    ensure_topic,
    join_topic_end,
    wait_announced,
)
from services.analysis import PointRules, summarize_point
from services.analysis.stats import PERCENTILES
from services.generator.settings import GeneratorSettings
from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment

REPO = Path(__file__).resolve().parents[3]
RATE, DURATION_S = 200, 3


def crayfish(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "services.runner.cli", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(p: subprocess.Popen, timeout_s: float = 120) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout_s)
    return p.returncode, out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def control_messages(bootstrap: str, topic: str, until, timeout_s: float = 90) -> list:
    """The control topic's messages from its start, once ``until(messages)`` holds."""
    ch = ControlChannel(bootstrap, None, topic)
    seen: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(seen):
            assert time.monotonic() < deadline, f"control topic {topic}: only {[m.kind for m in seen]}"
            seen += ch.poll(0.2)
    finally:
        ch.close()
    return seen


def claims(role: str, n: int):
    return lambda msgs: sum(1 for m in msgs if m.kind == "claim" and m.get("role") == role) >= n



def run_in_background(exp, bootstrap: str, tmp_path, models_dir):
    """Start ``exp`` in a thread and wait for its point's announcement -> (outcome: {"summary"} or
    {"error"} once it ends, the thread, the announced plan)."""
    start = join_topic_end(bootstrap)
    outcome: dict = {}

    def runner():
        try:
            outcome["summary"] = run_experiment(exp, tmp_path / "run", models_dir=models_dir)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            outcome["error"] = exc

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    return outcome, thread, wait_announced(bootstrap, None, start, timeout_s=120, experiment=exp.name)


def test_three_generators_and_two_collectors_make_one_point(kafka_bootstrap, models_dir, tmp_path):
    """One point, 3 generators and 2 collectors joined by run id: its counts are the sums of the
    parts, every host has its share, its percentiles are those of the merged records; a 4th
    generator is told no in one line."""
    name = f"hosts-{uuid.uuid4().hex[:6]}"
    exp = Experiment.model_validate({
        "name": name, "model": "ffnn", "engine": "kafka", "kafka": {"bootstrap": kafka_bootstrap},
        "workload": {"type": "constant", "rate": RATE, "duration_s": DURATION_S},
        "validity": {"min_duration_s": 1, "min_count": 20},
        "hosts": {"generators": 3, "collectors": 2, "join_timeout_s": 90}})
    outcome, thread, plan = run_in_background(exp, kafka_bootstrap, tmp_path, models_dir)
    run_id = plan["run_id"]
    procs = {f"g{i}": crayfish("generator", "--join", run_id, "--bootstrap", kafka_bootstrap, "--host", f"gen-{i}",
                               "--out", tmp_path / f"gen-{i}") for i in range(3)}
    procs |= {f"c{j}": crayfish("collector", "--join", run_id, "--bootstrap", kafka_bootstrap, "--host", f"col-{j}",
                                "--out", tmp_path / f"col-{j}", "--models-dir", models_dir) for j in range(2)}
    control_messages(kafka_bootstrap, plan["control_topic"], claims("generator", 3))
    code, _, err = finished(crayfish("generator", "--join", run_id, "--bootstrap", kafka_bootstrap, "--host", "gen-x"))
    assert code == 2 and one_line(err) == f"error: run {run_id} has its 3 generator(s) already: this one is not needed"

    thread.join(timeout=180)
    for key, p in procs.items():
        code, out, err = finished(p)
        assert code == 0, f"{key}: exit {code}\n{out[-2000:]}\n{err[-3000:]}"
    assert "error" not in outcome, outcome.get("error")
    point = outcome["summary"]["points"][0]
    point_dir = Path(point["dir"])

    # counts: the sums of the parts
    acc, hosts = point["accounting"], point["hosts"]
    gens, cols = hosts["generators"], hosts["collectors"]
    # parts go by the order of the claims: which host got which part is the race's
    assert sorted(g["host"] for g in gens) == ["gen-0", "gen-1", "gen-2"] and [g["part"] for g in gens] == [0, 1, 2]
    assert all(g["produced"] > 0 for g in gens) and sum(g["produced"] for g in gens) == acc["sent"] == RATE * DURATION_S
    assert all(g["clock_skew_ms"]["lower_ms"] <= 0.0 <= g["clock_skew_ms"]["upper_ms"] for g in gens), gens
    assert sorted(c["host"] for c in cols) == ["col-0", "col-1"] and all(c["scored"] > 0 for c in cols), cols
    assert sum(c["scored"] for c in cols) == acc["scored"] == acc["sent"], (cols, acc)
    assert acc["missing"] == acc["dead_lettered"] == acc["duplicates"] == 0, acc
    skew = point["clock_skew_ms"]
    assert skew["lower_ms"] == min(g["clock_skew_ms"]["lower_ms"] for g in gens)
    assert skew["upper_ms"] == max(g["clock_skew_ms"]["upper_ms"] for g in gens)

    # each host's own records: the batch-id ranges partitioned by sequence % 3, and who collected what
    sent = pq.read_table(point_dir / "sent.parquet").to_pydict()
    for g in gens:
        mine = [q for q, h in zip(sent["sequence"], sent["generator_host"]) if h == g["host"]]
        assert len(mine) == g["produced"] and {q % 3 for q in mine} == {g["part"]}
    batches = pq.read_table(point_dir / "batches.parquet")
    by_collector = batches.column("collector_host").to_pylist()
    for c in cols:
        assert by_collector.count(c["host"]) == c["scored"]

    # percentiles: those of the merged records, computed as the analysis defines them
    again = summarize_point(batches, PointRules(min_duration_s=1, min_count=20, rate_tolerance=0.02))
    assert again["latency_ms"] == point["latency_ms"] and again["accounting"]["sent"] == acc["sent"]
    _assert_percentiles_of(batches.to_pydict(), point["latency_ms"])
    assert json.loads((point_dir / "generator.json").read_text())["produced"] == acc["sent"]


def _assert_percentiles_of(b: dict, lat: dict) -> None:
    """numpy over the merged table: kept rows = sent and scored, minus the first 25 % in output order;
    latency = output append − created in whole µs; a percentile is the HDR value of the order
    statistic ceil(p·n/100), within its 0.1 % bucket (services.analysis.stats)."""
    sent = np.asarray(b["sent"], dtype=bool)
    out_ms = np.asarray([v if v is not None else -1 for v in b["output_append_ms"]], dtype=np.int64)[sent]
    created = np.asarray([v if v is not None else -1 for v in b["created_ns"]], dtype=np.int64)[sent]
    scored = (np.asarray(b["status"], dtype=object)[sent] == "scored") & (out_ms >= 0) & (created >= 0)
    order = np.argsort(np.where(out_ms >= 0, out_ms, np.iinfo(np.int64).max), kind="stable")
    warm = np.zeros(len(out_ms), dtype=bool)
    warm[order[:math.floor(len(out_ms) * 0.25)]] = True
    kept = scored & ~warm
    us = np.sort(np.rint((out_ms[kept] * 1_000_000 - created[kept]) / 1000.0).astype(np.int64))
    assert lat["count"] == len(us) and lat["max"] == us.max() / 1000.0 and lat["mean"] == us.mean() / 1000.0
    for key, p in PERCENTILES.items():
        at = np.percentile(us, p, method="inverted_cdf") / 1000.0
        assert at <= lat[key] <= at * 1.001 + 1e-9, (key, at, lat[key])


def test_a_point_not_every_host_joins_fails_naming_how_many_did(kafka_bootstrap, models_dir, tmp_path):
    """2 generators and 1 collector wanted, only the collector joins: the point fails in one line
    that says so, and the runner's abort ends the collector in one line too."""
    name = f"hosts-{uuid.uuid4().hex[:6]}"
    exp = Experiment.model_validate({
        "name": name, "model": "ffnn", "engine": "kafka", "kafka": {"bootstrap": kafka_bootstrap},
        "workload": {"type": "constant", "rate": 10, "duration_s": 1},
        "hosts": {"generators": 2, "collectors": 1, "join_timeout_s": 15}})
    outcome, thread, plan = run_in_background(exp, kafka_bootstrap, tmp_path, models_dir)
    run_id = plan["run_id"]
    col = crayfish("collector", "--join", run_id, "--bootstrap", kafka_bootstrap, "--host", "col-0",
                   "--out", tmp_path / "col")
    thread.join(timeout=120)
    said = str(outcome.get("error"))
    assert said == (f"hosts: 0 of 2 generator(s) and 1 of 1 collector(s) joined run {run_id} within 15 s "
                    f"(join commands: {tmp_path / 'run' / 'points' / '00-base' / 'rep-0' / 'join.txt'})"), said
    code, _, err = finished(col, 60)
    assert code == 2 and one_line(err) == f"error: run {run_id} was aborted by the runner: failed: {said}"


def test_a_joined_process_stops_cleanly_on_sigterm(kafka_bootstrap, topics, tmp_path):
    """A generator and a collector waiting for a start that never comes (the plan wants 2 generators):
    SIGTERM ends each with one line, and each tells the runner over the control topic."""
    run_id = f"t{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, None, control_topic(run_id))
    gs = GeneratorSettings(bootstrap=kafka_bootstrap, topic=topics.input, run_id=run_id, model="ffnn",
                           item_shape=[1, 784], workload={"type": "constant", "rate": 10, "duration_s": 1},
                           probe_topic=topics.probe, probes=3)
    cs = {"bootstrap": kafka_bootstrap, "output_topic": topics.output, "dead_letter_topic": topics.dead_letter,
          "input_topic": topics.input, "expect_file": None, "check_sample": 0.0}
    announce(kafka_bootstrap, None, {"run_id": run_id, "experiment": "sigterm", "control_topic": control_topic(run_id),
                                     "generators": 2, "collectors": 1, "join_timeout_s": 60,
                                     "generator": gs.model_dump(mode="json"), "collector": cs})
    procs = [crayfish(role, "--join", run_id, "--bootstrap", kafka_bootstrap, "--host", f"{role}-host",
                      "--out", tmp_path / role) for role in ("generator", "collector")]
    msgs = control_messages(kafka_bootstrap, control_topic(run_id),
                            lambda ms: sum(1 for m in ms if m.kind == "ready") == 2)
    for p in procs:
        os.kill(p.pid, signal.SIGTERM)
    for p, role in zip(procs, ("generator", "collector")):
        code, _, err = finished(p, 60)
        assert code == 143 and one_line(err) == f"{role} of run {run_id}: stopped by signal 15", (code, err)
    msgs = control_messages(kafka_bootstrap, control_topic(run_id),
                            lambda ms: sum(1 for m in ms if m.kind == "error") == 2)
    assert sorted(m["error"] for m in msgs if m.kind == "error") == ["stopped by signal 15"] * 2


def test_an_unknown_run_and_a_silent_broker_fail_in_one_line(kafka_bootstrap):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        silent = f"127.0.0.1:{s.getsockname()[1]}"
    unknown = crayfish("collector", "--join", "nosuchrun", "--bootstrap", kafka_bootstrap)
    down = crayfish("generator", "--join", "nosuchrun", "--bootstrap", silent)
    code, _, err = finished(unknown)
    assert code == 2 and one_line(err).startswith(f"error: no run nosuchrun announced at {kafka_bootstrap}"), err
    code, _, err = finished(down)
    assert code == 2 and one_line(err).startswith(f"error: Kafka at {silent} does not answer"), err
