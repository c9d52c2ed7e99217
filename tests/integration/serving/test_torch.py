"""TorchScript export + the embedded ``torchscript`` backend, against the numpy reference.

The test session runs in the core environment; everything that needs torch runs in the ``torch``
environment (``.envs/torch``, built on first use by ``python_for("torch")``) through a small check
script in a subprocess, which prints JSON for the assertions here.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from crayfish.host.envs import python_for
from crayfish.host.paths import REPO_ROOT
from serving.embedded import BACKENDS, ScorerConfigError, backend, create_scorer
from serving.models import build_model, default_models_dir

TOLERANCE = 1e-4

CHECK = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from serving.embedded import ScorerConfigError, ScoringError, create_scorer
    from serving.embedded.check import check
    from serving.models.export_torch import export_torchscript, stamp_path, torchscript_path

    out = {}
    t0 = time.perf_counter()
    for name in ("ffnn", "resnet50"):
        export_torchscript(name)
    mtime = torchscript_path("ffnn").stat().st_mtime_ns
    export_torchscript("ffnn")                      # cached: not rewritten
    out["export_cached"] = torchscript_path("ffnn").stat().st_mtime_ns == mtime
    out["stamp"] = json.loads(stamp_path("ffnn").read_text())
    out["ffnn"] = check("torchscript", "ffnn", batches=(1, 32))
    out["ffnn_none"] = check("torchscript", "ffnn", batches=(1, 32), optimize="none")
    out["ffnn_inference"] = check("torchscript", "ffnn", batches=(1, 32), optimize="inference")
    out["ffnn_threads0"] = check("torchscript", "ffnn", batches=(3,), threads=0)
    out["resnet50"] = check("torchscript", "resnet50", batches=(1,))
    with create_scorer("torchscript", "ffnn", threads=2) as s:
        out["describe"] = s.describe()
        s.warmup(1)
        x = np.zeros((1, 1, 784), np.float32)
        x.setflags(write=False)                     # read-only input (decoded from a buffer)
        y = s.score(x)
        out["readonly_ok"] = y.shape == (1, 10) and y.dtype == np.float32
        try:
            s.score(np.zeros((1, 1, 783), np.float32))
            out["bad_shape"] = None
        except ScoringError as exc:
            out["bad_shape"] = str(exc)
        n, t = 2000, time.perf_counter()
        for _ in range(n):
            s.score(x)
        out["ffnn_b1_us"] = (time.perf_counter() - t) / n * 1e6
    import torch
    try:
        create_scorer("torchscript", "ffnn", device="cuda").close()
        out["cuda"] = "ok"
    except ScorerConfigError as exc:
        out["cuda"] = str(exc)
    out["cuda_available"] = torch.cuda.is_available()
    try:
        create_scorer("torchscript", "ffnn", interop_threads=3)
        out["interop_change"] = None
    except ScorerConfigError as exc:
        out["interop_change"] = str(exc)
    out["seconds"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def torch_check(models_dir):
    for name in ("ffnn", "resnet50"):
        build_model(name, default_models_dir(), seed=42)
    py = python_for("torch")
    proc = subprocess.run([py, "-c", CHECK], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert proc.returncode == 0, f"check script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_backend_registered_without_torch_in_core():
    assert "torchscript" in BACKENDS
    # option errors come before any file access or torch import
    with pytest.raises(ScorerConfigError, match="no option 'bogus'"):
        create_scorer("torchscript", "ffnn", bogus=1)
    with pytest.raises(ScorerConfigError, match="device"):
        create_scorer("torchscript", "ffnn", device="tpu")
    with pytest.raises(ScorerConfigError, match="optimize"):
        create_scorer("torchscript", "ffnn", optimize="max")
    with pytest.raises(ScorerConfigError, match="allow_tf32"):
        create_scorer("torchscript", "ffnn", allow_tf32="maybe")


@pytest.mark.parametrize("key,batches", [("ffnn", ["batch=1", "batch=32"]), ("resnet50", ["batch=1"]),
                                         ("ffnn_none", ["batch=1", "batch=32"]),
                                         ("ffnn_inference", ["batch=1", "batch=32"]),
                                         ("ffnn_threads0", ["batch=3"])])
def test_torchscript_matches_reference(torch_check, key, batches):
    errors = torch_check[key]
    assert sorted(errors) == batches
    assert all(err <= TOLERANCE for err in errors.values()), errors


def test_the_runners_export_runs_the_backends_exporter_in_its_environment(torch_check):
    """What the runner calls before a point (``backend(name).export``): the torchscript backend's
    exporter, in the torch environment, keeping the current export."""
    pt = default_models_dir() / "ffnn" / "ffnn.torchscript.pt"
    before = pt.stat().st_mtime_ns
    lines: list[str] = []
    backend("torchscript").export("ffnn", default_models_dir(), seed=42, log=lines.append)
    assert "model ffnn: torchscript export (in the torch environment)" in lines
    assert pt.stat().st_mtime_ns == before


def test_export_is_cached_and_stamped(torch_check):
    assert torch_check["export_cached"] is True
    stamp = torch_check["stamp"]
    assert stamp["method"] == "torch.jit.script" and stamp["torch_version"].startswith("2.4.1")
    assert stamp["input_shape"] == [None, 1, 784] and stamp["output_shape"] == [None, 10]
    assert len(stamp["weights_sha256"]) == 64 and stamp["seed"] == 42
    manifest = json.loads((default_models_dir() / "ffnn" / "manifest.json").read_text())
    assert manifest["files"]["torchscript"]["sha256"] == stamp["sha256"]


def test_scorer_options_describe_and_errors(torch_check):
    d = torch_check["describe"]
    assert d["backend"] == "torchscript" and d["model"] == "ffnn"
    assert d["options"]["threads"] == 2 and d["intra_op_threads"] == 2 and d["inter_op_threads"] == 1
    assert d["torchscript"].endswith("ffnn/ffnn.torchscript.pt")
    assert torch_check["readonly_ok"] is True
    assert "expected float32 [b>=1, 1, 784]" in torch_check["bad_shape"]
    assert "process-wide" in torch_check["interop_change"]
    print(f"torchscript ffnn batch 1: {torch_check['ffnn_b1_us']:.1f} us/call (threads=2)")


def test_cuda_device_is_a_clear_error_without_a_gpu(torch_check):
    if torch_check["cuda_available"]:
        assert torch_check["cuda"] == "ok"
    else:
        assert "torch.cuda.is_available() is False" in torch_check["cuda"]
