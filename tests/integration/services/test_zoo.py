"""The zoo's tree model and transformer, built here by their own frameworks (scikit-learn in the
zoo environment, PyTorch in the torch one), exported to ONNX, checked against the framework and
run end to end embedded and behind the Scoring server: full accounting, `wrong` = 0."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment
from serving.models import reference_predictions, resolve_spec
from serving.models.zoo import ZOO, build_zoo_model


@pytest.mark.parametrize("model, seq_len", [("fraud-gbt", None), ("text-encoder", 16)])
def test_a_zoo_model_runs_embedded_and_behind_the_scoring_server(model, seq_len, kafka_bootstrap, tmp_path):
    given = {"zoo": model, **({"seq_len": seq_len} if seq_len else {})}
    exp = Experiment.model_validate({
        "name": model, "model": given, "engine": "kafka", "kafka": {"bootstrap": kafka_bootstrap},
        "check_predictions": 1.0, "batch_size": 4, "workload": {"type": "constant", "rate": 30, "duration_s": 3},
        "validity": {"min_duration_s": 1, "min_count": 20}, "sweep": {"serving": ["embedded", "scoring"]}})
    summary = run_experiment(exp, tmp_path / "run", models_dir=tmp_path / "models")
    facts = summary["model"]
    assert facts["kind"] == "file" and facts["zoo"]["build"]["builder"] == ZOO[model].builder
    check = facts["zoo"]["framework_check"]
    assert check["rows"] > 0 and max(check["max_abs_error"].values()) <= check["atol"]
    for point in summary["points"]:
        acc = point["accounting"]
        assert acc["sent"] == 90 and acc["scored"] == 90 and acc["dead_lettered"] == 0, (point["params"], acc)
        assert acc["checked"] == 90 and acc["wrong"] == 0, (point["params"], acc)


def test_the_zoo_builds_once_and_says_what_it_built(tmp_path):
    models = tmp_path / "models"
    manifest_path = build_zoo_model("fraud-gbt", models, seed=7, log=lambda _m: None)
    manifest = json.loads(manifest_path.read_text())
    training = manifest["zoo"]["facts"]["training"]
    assert training["seed"] == 7 and 0.01 < training["fraud_rate"] < 0.2 and training["holdout_auc"] > 0.6
    assert manifest["zoo"]["facts"]["converter"].startswith("skl2onnx")
    stamp = manifest_path.stat().st_mtime_ns
    built = []
    build_zoo_model("fraud-gbt", models, seed=7, log=built.append)
    assert built == [] and manifest_path.stat().st_mtime_ns == stamp       # cached: nothing rebuilt
    spec = resolve_spec("fraud-gbt", models)
    x = np.random.default_rng(0).random((3, 12), dtype=np.float32) * 100
    y = reference_predictions("fraud-gbt", models, x)
    assert set(y) == {"label", "probabilities"} and np.allclose(y["probabilities"].sum(axis=1), 1, atol=1e-5)
    assert spec == ZOO["fraud-gbt"].spec()
