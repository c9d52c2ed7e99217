"""Workers scoring through an external server (our Scoring service), every call mode, and a server
that dies mid-run: every batch ends scored or dead-lettered, none missing."""

from __future__ import annotations

import os
import signal
import threading

import pyarrow.parquet as pq
import pytest

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

    def kill_mid_run():
        # The generator starts right after the collector is ready; kill 2.5 s into the 5 s workload.
        while not stop_watching.is_set() and not list((tmp_path / "run").glob("points/*/*/collector.ready")):
            stop_watching.wait(0.05)
        if not stop_watching.wait(2.5):
            os.killpg(server.service.proc.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_mid_run, daemon=True)
    try:
        exp = _exp(kafka_bootstrap, {"kind": "external", "server": "scoring", "target": server.target,
                                     "call_mode": "pipelined", "timeout_ms": 500, "retries": 1},
                   {"type": "constant", "rate": 100, "duration_s": 5})
        killer.start()
        summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)
    finally:
        stop_watching.set()
        server.stop()
    acc = summary["points"][0]["accounting"]
    assert acc["sent"] == 500 and acc["missing"] == 0
    assert acc["scored"] > 0 and acc["dead_lettered"] > 0
    assert acc["scored"] + acc["dead_lettered"] == 500
    t = pq.read_table(tmp_path / "run" / "batches.parquet").to_pydict()
    details = {d for d, s in zip(t["detail"], t["status"]) if s == "dead_lettered"}
    assert all("scoring at 127.0.0.1" in d and "UnavailableError" in d for d in details), details


@pytest.mark.parametrize("server", ["triton", "ray-serve", "ray-serve-grpc", "tf-serving", "torchserve"])
def test_worker_through_each_external_server_has_complete_accounting(kafka_bootstrap, models_dir, tmp_path,
                                                                     server):
    exp = _exp(kafka_bootstrap, {"kind": "external", "server": server, "call_mode": "pipelined"},
               {"type": "constant", "rate": 50, "duration_s": 3}, check_predictions=0.2)
    summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)
    point = summary["points"][0]
    acc = point["accounting"]
    assert acc["sent"] == 150 and acc["scored"] == 150 and acc["missing"] == 0, acc
    assert acc["checked"] > 0 and acc["wrong"] == 0, point["predictions"]
    assert point["answered_by"], "the worker recorded which server answered"
