"""TensorFlow: the SavedModel export (serving.models.export_tf) and the embedded ``savedmodel``
backend predict what the numpy reference predicts, for the same seeded weights.

TensorFlow lives in the ``tensorflow`` environment (``envs/tensorflow``, built on demand by
``python_for``), so the checks run there as one script (``CHECK``) that prints a JSON report;
the assertions are made here, in the core env.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from crayfish.host.paths import REPO_ROOT
from crayfish.host.envs import python_for

TOLERANCE = 1e-4

CHECK = r"""
import json, sys
import numpy as np
from serving.embedded import ScorerConfigError, create_scorer
from serving.models import MODELS, build_model, model_paths, reference_forward
from serving.models.export_tf import export_savedmodel, load_signature

models_dir = sys.argv[1]
import tensorflow as tf
# the eager runtime's thread pools are process-wide: fix them before the export starts TensorFlow
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
report = {"diff": {}, "errors": {}, "describe": None}
for name, batches in (("ffnn", (1, 32)), ("resnet50", (1,))):
    build_model(name, models_dir, seed=42)
    path = export_savedmodel(name, models_dir)
    _, fn, key, outputs = load_signature(path)
    report.setdefault("signature", {})[name] = {"input_key": key, "outputs": outputs}
    scorers = {rt: create_scorer("savedmodel", name, models_dir, runtime=rt) for rt in ("session", "eager")}
    for b in batches:
        x = np.random.default_rng(b).random((b, *MODELS[name].input_shape), dtype=np.float32)
        ref = reference_forward(name, model_paths(name, models_dir).weights, x)
        got = {"signature": fn(**{key: tf.constant(x)})["output"].numpy()}
        for rt, s in scorers.items():
            got[rt] = s.score(x)
        for how, y in got.items():
            assert y.shape == ref.shape and y.dtype == np.float32, (how, y.shape, y.dtype)
            report["diff"][f"{name}/b{b}/{how}"] = float(np.abs(y - ref).max())
    if name == "ffnn":
        report["describe"] = scorers["session"].describe()
    for s in scorers.values():
        s.close()
for label, opts in (("cuda", {"device": "cuda"}), ("threads", {"intra_op_threads": 3}),
                    ("signature", {"signature": "nope"})):
    try:
        create_scorer("savedmodel", "ffnn", models_dir, **opts).close()
        report["errors"][label] = None
    except ScorerConfigError as exc:
        report["errors"][label] = str(exc)
report["gpus"] = len(tf.config.list_physical_devices("GPU"))
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def report(models_dir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    p = subprocess.run([python_for("tensorflow"), "-c", CHECK, str(models_dir)], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def test_savedmodel_matches_the_reference(report):
    expected = {f"{m}/b{b}/{how}" for m, bs in (("ffnn", (1, 32)), ("resnet50", (1,)))
                for b in bs for how in ("signature", "session", "eager")}
    assert set(report["diff"]) == expected
    bad = {k: v for k, v in report["diff"].items() if not v <= TOLERANCE}
    assert not bad, bad


def test_savedmodel_signature(report):
    for name in ("ffnn", "resnet50"):
        assert report["signature"][name] == {"input_key": "input_1", "outputs": ["output"]}
    d = report["describe"]
    assert d["backend"] == "savedmodel" and d["input_key"] == "input_1" and d["tensorflow_version"]
    assert d["options"]["intra_op_threads"] == 1 and d["options"]["runtime"] == "session"


def test_savedmodel_option_errors(report):
    if report["gpus"] == 0:
        assert "no GPU" in report["errors"]["cuda"]
    assert "intra_op_threads=3" in report["errors"]["threads"]
    assert "no signature 'nope'" in report["errors"]["signature"]


def test_savedmodel_is_listed_in_every_environment(models_dir):
    from serving.embedded import BACKENDS, ScorerConfigError, create_scorer

    assert "savedmodel" in BACKENDS
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        with pytest.raises(ScorerConfigError, match="tensorflow"):
            create_scorer("savedmodel", "ffnn", models_dir).close()
