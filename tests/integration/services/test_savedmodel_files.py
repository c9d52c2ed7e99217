"""A SavedModel folder of one's own (``model: {path: my_savedmodel}``): its signature read by
TensorFlow in the tensorflow environment, embedded with the savedmodel backend, behind our
Scoring server and behind the TF Serving protocol, every prediction checked against TensorFlow on the CPU on the same folder."""

from __future__ import annotations

import numpy as np

from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment
from serving.models import import_model_file, reference_predictions, resolve_spec
from serving.models.files import read_signature
from tests.support.savedmodel_files import make_savedmodel


def test_the_signature_and_the_reference_come_from_tensorflow(tmp_path):
    folder = make_savedmodel(tmp_path / "two", two=True)
    sig = read_signature(folder)
    assert sig.format == "savedmodel"
    assert [t.describe() for t in sig.inputs + sig.outputs] == [
        "features: float32 [?, 6]", "mask: int64 [?, 6]", "label: int64 [?]", "scores: float32 [?, 3]"]
    import_model_file(folder, tmp_path / "models", "two", {"mask": {"range": [0, 2]}})
    spec = resolve_spec("two", tmp_path / "models")
    assert spec.named and (tmp_path / "models" / "two" / "savedmodel" / "saved_model.pb").is_file()
    x = {"features": np.random.default_rng(2).random((5, 6), dtype=np.float32), "mask": np.ones((5, 6), np.int64)}
    y = reference_predictions("two", tmp_path / "models", x)
    assert y["scores"].shape == (5, 3) and np.array_equal(y["label"], np.argmax(y["scores"], axis=1))


def test_a_savedmodel_runs_embedded_behind_the_scoring_server_and_tf_serving(kafka_bootstrap, tmp_path):
    folder = make_savedmodel(tmp_path / "two", two=True)
    exp = Experiment.model_validate({
        "name": "sm", "model": {"path": str(folder), "inputs": {"mask": {"range": [0, 2]}}}, "engine": "kafka",
        "serving": {"backend": "savedmodel"}, "kafka": {"bootstrap": kafka_bootstrap}, "check_predictions": 1.0,
        "batch_size": 4, "workload": {"type": "constant", "rate": 30, "duration_s": 3},
        "validity": {"min_duration_s": 1, "min_count": 20}, "sweep": {"serving": ["embedded", "scoring", "tf-serving"]}})
    summary = run_experiment(exp, tmp_path / "run", models_dir=tmp_path / "models")
    assert summary["model"]["reference"].startswith("tensorflow-cpu on ") and summary["model"]["format"] == "savedmodel"
    for point in summary["points"]:
        acc = point["accounting"]
        assert acc["sent"] == 90 and acc["scored"] == 90 and acc["dead_lettered"] == 0, (point["params"], acc)
        assert acc["checked"] == 90 and acc["wrong"] == 0, (point["params"], acc)
