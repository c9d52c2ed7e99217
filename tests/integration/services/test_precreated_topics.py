"""Topics the user controls: pre-created topics used as they are (shared by runs, each run kept
apart), checked before measuring (one line when one is missing or not broker-stamped), and the
replication settings of the topics the runner creates."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import yaml
from confluent_kafka.admin import AdminClient, ConfigResource

from crayfish.kafka import RunTopics, admin_config, create_topics, delete_topics
from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment
from tests.support.kafka_io import read_to_end, send_batches

REPO = __import__("pathlib").Path(__file__).resolve().parents[3]
TINY = {"model": "ffnn", "engine": "kafka", "workload": {"type": "constant", "rate": 50, "duration_s": 2},
        "validity": {"min_duration_s": 1, "min_count": 20}}


@pytest.fixture
def precreated(kafka_bootstrap):
    """Topics made by "an administrator": input (2 partitions, already holding 30 batches of an
    earlier run), output, dead letter and probe stamped by the broker."""
    t = RunTopics.for_run(f"pre{uuid.uuid4().hex[:6]}")
    create_topics(kafka_bootstrap, t, partitions=2)
    send_batches(kafka_bootstrap, t.input, "an-earlier-run", range(30))
    yield t
    delete_topics(kafka_bootstrap, t)


def topics_of(t: RunTopics) -> dict:
    return {"input": t.input, "output": t.output, "dead_letter": t.dead_letter, "probe": t.probe}


def test_two_runs_share_precreated_topics_and_each_scores_only_its_own(kafka_bootstrap, models_dir, tmp_path, precreated):
    exp = Experiment.model_validate({**TINY, "name": "pre", "kafka": {"bootstrap": kafka_bootstrap,
                                                                      "topics": topics_of(precreated)}})
    for i in range(2):
        point = run_experiment(exp, tmp_path / f"run{i}", models_dir=models_dir)["points"][0]
        acc = point["accounting"]
        assert acc["sent"] == acc["scored"] == 100 and acc["dead_lettered"] == 0, acc
    # The earlier run's 30 batches were never scored: the output holds exactly the two runs' 200.
    outputs = read_to_end(kafka_bootstrap, precreated.output)
    assert len(outputs) == 200
    assert read_to_end(kafka_bootstrap, precreated.dead_letter) == []
    names = AdminClient(admin_config(kafka_bootstrap)).list_topics(timeout=10).topics
    assert not [n for n in names if n.startswith("crayfish-") and n not in topics_of(precreated).values()
                and n.endswith(("-input", "-output", "-dlq", "-probe")) and "pre" not in n], "runner created topics"


def run_cli(tmp_path, exp: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return subprocess.run([sys.executable, "-m", "services.runner.cli", "run", str(path), "--out", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def failure_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_a_missing_topic_fails_in_one_line(kafka_bootstrap, tmp_path, precreated):
    topics = {**topics_of(precreated), "output": "nobody-made-this-topic"}
    msg = failure_line(run_cli(tmp_path, {**TINY, "name": "missing", "kafka": {"bootstrap": kafka_bootstrap, "topics": topics}}))
    assert msg == "error: run failed: kafka.topics: topic 'nobody-made-this-topic' does not exist on the cluster", msg


def test_a_create_time_output_topic_fails_in_one_line(kafka_bootstrap, tmp_path, precreated):
    stamped_by_producer = f"createtime-{uuid.uuid4().hex[:6]}"
    create_topics(kafka_bootstrap, RunTopics(stamped_by_producer, "", "", ""), only=[stamped_by_producer],
                  configs={"message.timestamp.type": "CreateTime"})
    try:
        topics = {**topics_of(precreated), "output": stamped_by_producer}
        msg = failure_line(run_cli(tmp_path, {**TINY, "name": "ct", "kafka": {"bootstrap": kafka_bootstrap, "topics": topics}}))
    finally:
        delete_topics(kafka_bootstrap, RunTopics(stamped_by_producer, "", "", ""), only=[stamped_by_producer])
    assert msg.startswith(f"error: run failed: kafka.topics: topic '{stamped_by_producer}' has "
                          "message.timestamp.type=CreateTime; the latency is measured on the broker's stamps, "
                          "so it needs LogAppendTime"), msg


def test_replication_settings_reach_the_topics_the_runner_creates(kafka_bootstrap, models_dir, tmp_path):
    exp = Experiment.model_validate({**TINY, "name": "repl", "kafka": {
        "bootstrap": kafka_bootstrap, "replication_factor": 1,
        "topic_configs": {"min.insync.replicas": "1", "retention.ms": "3600000"}}})
    point = run_experiment(exp, tmp_path / "run", models_dir=models_dir)["points"][0]
    assert point["accounting"]["sent"] == point["accounting"]["scored"] == 100
    # The same settings, applied (read back from the broker)...
    t = RunTopics.for_run(f"cfg{uuid.uuid4().hex[:6]}")
    create_topics(kafka_bootstrap, t, only=[t.input], configs=exp.kafka.topic_configs)
    try:
        res = ConfigResource(ConfigResource.Type.TOPIC, t.input)
        admin = AdminClient(admin_config(kafka_bootstrap))
        got = admin.describe_configs([res])[res].result(timeout=10)
        assert (got["min.insync.replicas"].value, got["retention.ms"].value) == ("1", "3600000")
        assert got["message.timestamp.type"].value == "LogAppendTime"
    finally:
        delete_topics(kafka_bootstrap, t, only=[t.input])
    # ... and a replication factor the cluster cannot hold is refused by the broker, in one line.
    msg = failure_line(run_cli(tmp_path, {**TINY, "name": "rf3", "kafka": {"bootstrap": kafka_bootstrap,
                                                                            "replication_factor": 3}}))
    assert msg.startswith("error: run failed: could not create topic crayfish-") and \
        "target replication factor of 3 cannot be reached because only 1 broker(s) are registered" in msg, msg
