"""A pipeline written by someone else, against the documented topics and the crayfish-json message:
the minimal adapter of docs/adapters.md (reads the input topic, scores with ONNX Runtime, writes
crayfish-json outputs with no Kafka headers), measured as `engine: command` and as `engine: external`.
Complete accounting (scored = sent, missing 0, unmatched 0, predictions checked and right) and a
hop table without impossible values: the worker's hops absent, never computed from 0."""

from __future__ import annotations

import os
import re
import sys
import uuid

from crayfish.host.paths import REPO_ROOT
from crayfish.host.procs import Service
from crayfish.kafka import RunTopics, create_topics, delete_topics
from serving.models import build_model, model_paths
from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment

WORKER_HOPS = ("produce", "wait", "decode", "score", "encode", "publish")


def minimal_adapter(tmp_path):
    """The program of docs/adapters.md, "A minimal adapter", exactly as printed there."""
    doc = (REPO_ROOT / "docs" / "adapters.md").read_text()
    section = doc[doc.index("## A minimal adapter"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "minimal_adapter.py"
    path.write_text(code)
    return path


def experiment(name: str, bootstrap: str, **fields) -> Experiment:
    return Experiment.model_validate({
        "name": name, "model": "ffnn", "codec": "crayfish-json", "batch_size": 2, "check_predictions": 1.0,
        "kafka": {"bootstrap": bootstrap, **fields.pop("kafka", {})},
        "workload": {"type": "constant", "rate": 40, "duration_s": 3},
        "validity": {"min_duration_s": 1, "min_count": 20}, "trace_sample": 0.0, **fields})


def assert_honest(point: dict) -> None:
    acc = point["accounting"]
    assert acc["sent"] == 120 and acc["scored"] == 120, acc
    assert acc["missing"] == 0 and acc["unmatched"] == 0 and acc["dead_lettered"] == 0, acc
    assert acc["checked"] == 120 and acc["wrong"] == 0, acc
    hops = point["hops_ms"]
    for hop in WORKER_HOPS:   # the adapter writes no stamps: absent, not ±1.8e12
        assert hops[hop]["p50"] is None and hops[hop]["mean"] is None, (hop, hops[hop])
    assert 0 <= hops["e2e"]["p50"] < 10_000, hops["e2e"]
    assert 0 <= point["latency_receive_ms"]["p50"] < 10_000, point["latency_receive_ms"]
    assert point["valid"], point["reasons"]


def test_a_headerless_pipeline_as_engine_command(kafka_bootstrap, tmp_path):
    adapter = minimal_adapter(tmp_path)
    exp = experiment("adapter-command", kafka_bootstrap, engine="command",
                     engine_options={"command": ["${CRAYFISH_PYTHON}", str(adapter)]})
    summary = run_experiment(exp, tmp_path / "run", models_dir=tmp_path / "models")
    [point] = summary["points"]
    assert_honest(point)


def test_a_headerless_pipeline_that_already_runs_as_engine_external(kafka_bootstrap, tmp_path):
    models = tmp_path / "models"
    build_model("ffnn", models)
    topics = RunTopics.for_run(f"theirs-{uuid.uuid4().hex[:6]}")
    create_topics(kafka_bootstrap, topics, partitions=2)
    env = {"CRAYFISH_BOOTSTRAP": kafka_bootstrap, "CRAYFISH_GROUP_ID": f"theirs-{uuid.uuid4().hex[:6]}",
           "CRAYFISH_INPUT_TOPIC": topics.input, "CRAYFISH_OUTPUT_TOPIC": topics.output,
           "CRAYFISH_MODEL_ONNX": str(model_paths("ffnn", models).onnx)}
    pipeline = Service("their-pipeline", [str(minimal_adapter(tmp_path))], tmp_path / "pipeline.log",
                       python=sys.executable, env=env)
    try:
        exp = experiment("adapter-external", kafka_bootstrap, engine="external", kafka={"topics": {
            "input": topics.input, "output": topics.output, "dead_letter": topics.dead_letter,
            "group": env["CRAYFISH_GROUP_ID"], "ready_timeout_s": 60}})
        first = run_experiment(exp, tmp_path / "run", models_dir=models)
        # the topics now hold a whole run (and its probe): the next run counts only its own records
        second = run_experiment(exp, tmp_path / "run2", models_dir=models)
        assert pipeline.alive(), pipeline.log_tail()
    finally:
        pipeline.stop()
        delete_topics(kafka_bootstrap, topics)
    for summary in (first, second):
        [point] = summary["points"]
        assert_honest(point)
    assert os.path.exists(tmp_path / "run") and list((tmp_path / "run").rglob("pipeline.json"))


def test_engine_external_names_a_pipeline_that_does_not_answer(kafka_bootstrap, tmp_path):
    topics = RunTopics.for_run(f"silent-{uuid.uuid4().hex[:6]}")
    create_topics(kafka_bootstrap, topics, partitions=1)
    try:
        exp = experiment("silent", kafka_bootstrap, engine="external", kafka={"topics": {
            "input": topics.input, "output": topics.output, "dead_letter": topics.dead_letter,
            "ready_timeout_s": 3}})
        try:
            run_experiment(exp, tmp_path / "run", models_dir=tmp_path / "models")
        except Exception as exc:  # noqa: BLE001 - the message is what is checked
            said = str(exc)
        else:
            said = ""
    finally:
        delete_topics(kafka_bootstrap, topics)
    assert said == (f"engine external: nothing on {topics.output} or {topics.dead_letter} within 3 s of a probe "
                    f"batch on {topics.input}: is the pipeline running and reading that topic?"), said
