"""Every client of a run through a secured cluster: the session's SASL_SSL / mutual-TLS broker
(services/broker/secure.py; plaintext is refused there, tests/integration/services/test_secure_broker.py).

- the default experiment (its closed-loop sweep, shortened; no throughput search) and one small
  experiment per engine score every batch through SASL_SSL, with full accounting;
- a user without permission to create topics runs on pre-created topics;
- mutual TLS;
- and no secret is anywhere in a run folder.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from crayfish.kafka import RunTopics, create_topics, delete_topics
from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment
from sps_workers import ENGINES

REPO = Path(__file__).resolve().parents[3]
SMALL = {"model": "ffnn", "workload": {"type": "constant", "rate": 50, "duration_s": 2},
         "validity": {"min_duration_s": 1, "min_count": 20}}
# Mechanisms spread over the engines, so that each one is used by a Java, a Python and a Go client.
MECHANISM = {"go": "SCRAM-SHA-512", "kafka-streams": "SCRAM-SHA-512", "faust": "SCRAM-SHA-512", "bytewax": "PLAIN",
             "spark": "PLAIN"}


def secrets_of(secure) -> list[str]:
    """What must never be written: every user's password, and the client key's PEM body."""
    key_lines = [ln for ln in Path(secure.mtls_client().properties["ssl.key.location"]).read_text().splitlines()
                 if ln and not ln.startswith("-----")]
    return [secure.password(u) for u in ("crayfish", "reader", "admin")] + key_lines[:2]


def assert_no_secret_in(run_dir: Path, secure) -> None:
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert files
    for secret in secrets_of(secure):
        leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert not leaked, f"a secret is written in {leaked}"


def assert_every_batch_scored(summary: dict) -> None:
    for point in summary["points"]:
        acc = point["accounting"]
        assert acc["sent"] > 0 and acc["scored"] == acc["sent"] and acc["dead_lettered"] == 0, acc


def test_the_default_experiment_through_sasl_ssl(secure_kafka, models_dir, tmp_path):
    raw = yaml.safe_load((REPO / "experiments" / "default.yaml").read_text())
    raw.pop("search")
    raw["workload"]["duration_s"] = 3
    raw["kafka"] = {**raw.get("kafka", {}), "bootstrap": secure_kafka.sasl_bootstrap,
                    "client": secure_kafka.client().properties}
    summary = run_experiment(Experiment.model_validate(raw), tmp_path / "run", models_dir=models_dir)
    assert len(summary["points"]) == 3
    assert_every_batch_scored(summary)
    assert_no_secret_in(tmp_path / "run", secure_kafka)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_every_engine_scores_through_sasl_ssl(secure_kafka, models_dir, tmp_path, engine):
    exp = Experiment.model_validate({
        **SMALL, "name": f"secure-{engine}", "engine": engine,
        "engine_options": dict(ENGINES[engine].options.CONFORMANCE_OPTIONS) if engine == "command" else {},
        "kafka": {"bootstrap": secure_kafka.sasl_bootstrap,
                  "client": secure_kafka.client(mechanism=MECHANISM.get(engine, "SCRAM-SHA-256")).properties}})
    summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)
    assert_every_batch_scored(summary)
    assert summary["points"][0]["accounting"]["sent"] == 100
    assert_no_secret_in(tmp_path / "run", secure_kafka)


def test_pre_created_topics_need_no_permission_to_create(secure_kafka, models_dir, tmp_path):
    t = RunTopics.for_run(f"sec{uuid.uuid4().hex[:6]}")
    create_topics(secure_kafka.sasl_bootstrap, t, partitions=2, client=secure_kafka.client())   # the administrator
    try:
        reader = secure_kafka.client(user="reader")
        topics = {"input": t.input, "output": t.output, "dead_letter": t.dead_letter, "probe": t.probe}
        exp = Experiment.model_validate({**SMALL, "name": "secure-precreated", "engine": "kafka", "kafka": {
            "bootstrap": secure_kafka.sasl_bootstrap, "client": reader.properties, "topics": topics}})
        summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)
        assert_every_batch_scored(summary)
        # The same user may not create a run's own topics: the refusal is the broker's.
        fresh = Experiment.model_validate({**SMALL, "name": "secure-fresh", "engine": "kafka", "kafka": {
            "bootstrap": secure_kafka.sasl_bootstrap, "client": reader.properties}})
        with pytest.raises(RuntimeError, match=r"could not create topic crayfish-.*(?i:authoriz)"):
            run_experiment(fresh, tmp_path / "refused", models_dir=models_dir)
    finally:
        delete_topics(secure_kafka.sasl_bootstrap, t, client=secure_kafka.client())


def test_mutual_tls(secure_kafka, models_dir, tmp_path):
    exp = Experiment.model_validate({**SMALL, "name": "mtls", "engine": "kafka", "kafka": {
        "bootstrap": secure_kafka.mtls_bootstrap, "client": secure_kafka.mtls_client().properties}})
    summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)
    assert_every_batch_scored(summary)
    assert_no_secret_in(tmp_path / "run", secure_kafka)
