"""Tracing through a real run: spans for every hop of the sampled batches, linked across Kafka,
and a per-hop breakdown whose hops add up to the end-to-end latency."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from observability.hops import read_spans
from observability.names import BATCH_ID
from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment


def _exp(kafka_bootstrap, sample: float) -> Experiment:
    return Experiment.model_validate({
        "name": "traced", "model": "ffnn", "kafka": {"bootstrap": kafka_bootstrap},
        "serving": {"kind": "embedded", "backend": "sleep", "delay_ms": 30},
        "workload": {"type": "closed_loop", "outstanding": 1, "count": 40, "duration_s": 60},
        "validity": {"min_duration_s": 1, "min_count": 10}, "trace_sample": sample})


def test_traced_run_links_hops_and_names_the_bottleneck(kafka_bootstrap, models_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    summary = run_experiment(_exp(kafka_bootstrap, 1.0), tmp_path / "run", models_dir=models_dir)
    point = summary["points"][0]
    spans = read_spans(point["dir"])
    by_id = {s["span_id"]: s for s in spans}
    process = [s for s in spans if s["name"].startswith("process ") and s["service"] == "kafka-worker"]
    assert len(process) == 40
    facts = pq.read_table(Path(point["dir"]) / "batches.parquet", columns=["batch_id", "inference_ns"]).to_pydict()
    inference_ns = dict(zip(facts["batch_id"], facts["inference_ns"]))
    score_ms = []
    for p in process:
        parent = by_id[p["parent_id"]]            # the generator's send span, across Kafka
        assert parent["service"] == "generator" and parent["kind"] == "PRODUCER"
        assert parent["trace_id"] == p["trace_id"]
        children = {s["name"]: s for s in spans if s["parent_id"] == p["span_id"]}
        assert {"crayfish.decode", "crayfish.score", "crayfish.encode"} <= set(children)
        # The score span is the worker's own measurement of the call (the 30 ms sleep model): the
        # same nanoseconds as the inference_ns the collector stored for that batch.
        score = children["crayfish.score"]
        assert score["end_ns"] - score["start_ns"] == inference_ns[p["attributes"][BATCH_ID]] > 0
        score_ms.append((score["end_ns"] - score["start_ns"]) / 1e6)
    hops = point["hops_traced"]
    assert hops["bottleneck"] == "score"
    assert hops["batches"] == 40
    assert hops["bottleneck_ms"] == pytest.approx(float(np.percentile(score_ms, 50)), rel=1e-9)
    assert hops["sum_check"]["ok"], hops["sum_check"]
    json.dumps(hops)  # part of summary.json
    out = subprocess.run([sys.executable, "-m", "services.runner.cli", "hops", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "bottleneck score" in out.stdout and "ok" in out.stdout


@pytest.mark.parametrize("sample", [0.0])
def test_unsampled_batches_leave_no_worker_spans(kafka_bootstrap, models_dir, tmp_path, monkeypatch, sample):
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    summary = run_experiment(_exp(kafka_bootstrap, sample), tmp_path / "run", models_dir=models_dir)
    spans = read_spans(summary["points"][0]["dir"])
    assert not [s for s in spans if s["service"] == "kafka-worker"]
    assert summary["points"][0]["accounting"]["scored"] == 40


def test_external_call_carries_the_trace_into_the_scoring_server(kafka_bootstrap, models_dir, tmp_path, monkeypatch):
    """Worker -> Scoring server over gRPC: the server's span is a child of the worker's client span
    (context in the gRPC metadata), its inference child shows the 30 ms model, and the collector's
    receive span hangs under the worker's send span across the output topic."""
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    exp = Experiment.model_validate({
        "name": "traced-ext", "model": "ffnn", "kafka": {"bootstrap": kafka_bootstrap},
        "serving": {"kind": "external", "server": "scoring", "backend": "sleep", "delay_ms": 30},
        "workload": {"type": "closed_loop", "outstanding": 1, "count": 30, "duration_s": 60},
        "validity": {"min_duration_s": 1, "min_count": 10}, "trace_sample": 1.0})
    summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)
    point = summary["points"][0]
    spans = read_spans(point["dir"])
    by_id = {s["span_id"]: s for s in spans}
    servers = [s for s in spans if s["kind"] == "SERVER"]
    assert len(servers) == 30
    facts = pq.read_table(Path(point["dir"]) / "batches.parquet",
                          columns=["batch_id", "inference_ns", "server_inference_ns"]).to_pydict()
    client_ns = dict(zip(facts["batch_id"], facts["inference_ns"]))
    server_ns = dict(zip(facts["batch_id"], facts["server_inference_ns"]))
    inference_ms = []
    for srv in servers:
        assert srv["service"] == "scoring" and srv["name"] == "crayfish.v1.Scoring/Score"
        client = by_id[srv["parent_id"]]
        assert client["kind"] == "CLIENT" and client["service"] == "kafka-worker"
        assert client["name"] == "crayfish.score" and client["trace_id"] == srv["trace_id"]
        assert client["start_ns"] <= srv["start_ns"] and srv["end_ns"] <= client["end_ns"] + 1_000_000
        inference = [s for s in spans if s["parent_id"] == srv["span_id"] and s["name"] == "crayfish.inference"]
        assert len(inference) == 1
        # The server's inference span is the server core's own timing of the model call (the 30 ms
        # sleep), the same nanoseconds it answered with (facts.server_inference_ns of the batch);
        # the client span is the worker's timing of the whole call, which contains it.
        batch_id = by_id[client["parent_id"]]["attributes"][BATCH_ID]
        took = inference[0]["end_ns"] - inference[0]["start_ns"]
        assert took == server_ns[batch_id] > 0, (batch_id, took, server_ns[batch_id])
        assert client["end_ns"] - client["start_ns"] == client_ns[batch_id] > took
        inference_ms.append(took / 1e6)
    receives = [s for s in spans if s["service"] == "collector"]
    assert len(receives) == 30
    for r in receives:
        send = by_id[r["parent_id"]]
        assert send["kind"] == "PRODUCER" and send["service"] == "kafka-worker"
    hops = point["hops_traced"]
    assert hops["bottleneck"] == "score" and hops["sum_check"]["ok"], hops["sum_check"]
    parts = hops["score_parts_ms"]
    assert parts["source"]["spans"] == 30
    assert parts["inference"]["p50"] == pytest.approx(float(np.percentile(inference_ms, 50)), rel=1e-9)
    assert 0 < parts["client"]["p50"] < hops["hops_ms"]["score"]["p50"]
