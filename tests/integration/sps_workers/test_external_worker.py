"""Workers scoring through an external server (our Scoring service), every call mode, and a server
that dies mid-run: every batch ends scored or dead-lettered, none missing."""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid

import pyarrow.parquet as pq
import pytest

from confluent_kafka import Consumer, KafkaException, TopicPartition

from crayfish.kafka import consumer_config
from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment


def _exp(kafka_bootstrap, serving, workload, **fields) -> Experiment:
    base = {"name": "ext", "model": "ffnn", "engine": "kafka", "kafka": {"bootstrap": kafka_bootstrap},
            "validity": {"min_duration_s": 1, "min_count": 20}, "serving": serving, "workload": workload}
    base.update(fields)
    return Experiment.model_validate(base)


@pytest.mark.parametrize("call_mode", ["blocking", "pipelined", "microbatch"])
def test_external_scoring_run_has_complete_accounting(kafka_bootstrap, models_dir, tmp_path, call_mode):
    exp = _exp(kafka_bootstrap, {"kind": "external", "server": "scoring", "call_mode": call_mode},
               {"type": "constant", "rate": 150, "duration_s": 3})
    summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)
    point = summary["points"][0]
    assert point["accounting"]["sent"] == 450
    assert point["accounting"]["scored"] == 450 and point["accounting"]["missing"] == 0
    assert point["answered_by"] == ["crayfish-scoring"]
    assert point["params"]["call_mode"] == call_mode
    t = pq.read_table(tmp_path / "run" / "batches.parquet").to_pydict()
    assert set(t["backend"]) == {"scoring"}
    assert all(v > 0 for v in t["server_inference_ns"])


def test_server_killed_mid_run_loses_no_batch(kafka_bootstrap, models_dir, tmp_path):
    from serving.scoring.launcher import start

    server = start("ffnn", instances=1, models_dir=models_dir, log_dir=tmp_path / "server")
    stop_watching = threading.Event()
    killed_after = []   # scored batches on the output topic when the server was killed
    kill_after_n = 100  # of 500: mid-run on any machine, with most of the workload still to come

    def kill_mid_run():
        # Kill the server once the worker has written kill_after_n scored batches to the run's output
        # topic (named in the point's worker.json): a condition, not a timer, so on a slow machine
        # the kill still falls between scored and not yet scored batches.
        cfg = []
        while not stop_watching.is_set() and not cfg:
            cfg = list((tmp_path / "run").glob("points/*/*/worker.json"))
            stop_watching.wait(0.05)
        if stop_watching.is_set():
            return
        ws = json.loads(cfg[0].read_text())
        c = Consumer(consumer_config(ws["bootstrap"], f"t-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
        try:
            parts = {}
            while not stop_watching.is_set() and not parts:
                try:
                    parts = c.list_topics(ws["output_topic"], timeout=5).topics[ws["output_topic"]].partitions
                except KafkaException:
                    stop_watching.wait(0.1)
            c.assign([TopicPartition(ws["output_topic"], p, 0) for p in parts])
            seen = 0
            while not stop_watching.is_set() and seen < kill_after_n:
                seen += sum(1 for m in c.consume(100, timeout=0.2) if not m.error())
            if seen >= kill_after_n:
                os.killpg(server.service.proc.pid, signal.SIGKILL)
                killed_after.append(seen)
        finally:
            c.close()

    killer = threading.Thread(target=kill_mid_run, daemon=True)
    try:
        exp = _exp(kafka_bootstrap, {"kind": "external", "server": "scoring", "target": server.target,
                                     "call_mode": "pipelined", "timeout_ms": 500, "retries": 1},
                   {"type": "constant", "rate": 100, "duration_s": 5})
        killer.start()
        summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)
    finally:
        stop_watching.set()
        killer.join(timeout=30)
        server.stop()
    assert killed_after, "the server was not killed during the run"
    acc = summary["points"][0]["accounting"]
    assert acc["sent"] == 500 and acc["missing"] == 0
    assert acc["scored"] >= killed_after[0], (acc, killed_after)
    assert acc["scored"] > 0 and acc["dead_lettered"] > 0
    assert acc["scored"] + acc["dead_lettered"] == 500
    t = pq.read_table(tmp_path / "run" / "batches.parquet").to_pydict()
    details = {d for d, s in zip(t["detail"], t["status"]) if s == "dead_lettered"}
    assert all("scoring at 127.0.0.1" in d and "UnavailableError" in d for d in details), details


# The server each path must be answered by, as it names itself (versions pinned in envs/*/requirements.txt):
# a runner that started the wrong server, or a client that filled in a name, fails here.
ANSWERED_BY = {"triton": "triton 2.51.0 (pytriton 0.7.0)", "ray-serve": "ray-serve 2.60.0",
               "ray-serve-grpc": "ray-serve 2.60.0", "tf-serving": "crayfish-scoring (tf-serving protocol)",
               "torchserve": "torchserve 0.12.0"}


@pytest.mark.parametrize("server", list(ANSWERED_BY))
def test_worker_through_each_external_server_has_complete_accounting(kafka_bootstrap, models_dir, tmp_path,
                                                                     server):
    exp = _exp(kafka_bootstrap, {"kind": "external", "server": server, "call_mode": "pipelined"},
               {"type": "constant", "rate": 50, "duration_s": 3}, check_predictions=0.2)
    summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)
    point = summary["points"][0]
    acc = point["accounting"]
    assert acc["sent"] == 150 and acc["scored"] == 150 and acc["missing"] == 0, acc
    assert acc["checked"] > 0 and acc["wrong"] == 0, point["predictions"]
    assert point["answered_by"] == [ANSWERED_BY[server]]
