"""TorchScript export of the model zoo, from the SAME seeded ``.npz`` as the ONNX model.

Runs in the ``torch`` environment (``envs/torch``; torch is imported inside the functions, so this
module itself imports anywhere)::

    .envs/torch/bin/python -m serving.models.export_torch [--model ffnn|resnet50|all]
        [--dir DIR] [--seed 42] [--force]

or :func:`export_torchscript` from code (``python_for("torch")`` gives the interpreter).

What it writes (next to the ONNX file, see :mod:`serving.models.build`)::

    <models_dir>/<name>/<name>.torchscript.pt     the scripted module (torch.jit.save)
    <models_dir>/<name>/<name>.torchscript.json   export stamp: weights sha256, seed, torch
                                                  version, exporter version, file sha256
    manifest.json  "files" gains "torchscript" (path, bytes, sha256, torch version)

The modules are plain ``torch.nn`` modules built from the ``.npz`` (:func:`build_module`) and
compiled with ``torch.jit.script`` (not traced: no example input is baked in, the batch axis is
free), in eval mode, every parameter with ``requires_grad=False``:

- ``ffnn``: input ``[b, 1, 784]`` -> flatten -> 4 x (Linear 32 + ReLU) -> Linear 10 -> ``[b, 10]``.
  Dense kernels are stored ``[in, out]`` in the ``.npz``; ``nn.Linear`` wants ``[out, in]``, so they
  are transposed.
- ``resnet50``: input ``[b, 224, 224, 3]`` NHWC (as the Keras model and the ONNX graph), permuted to
  NCHW inside the module (the permuted tensor is channels-last in memory, which oneDNN convolutions
  take as is), then exactly the folded-BN graph of :mod:`serving.models.resnet50`: 7x7/2 conv +
  ReLU, 3x3/2 max pool (padding 1, i.e. ``-inf`` padding), 16 bottleneck blocks (stride on the 3x3
  conv, projection shortcut on each stage's first block), global average pool, dense 2048->1000.
  Conv kernels are OIHW already; padding is ``k // 2`` on every side, as the ONNX graph.

Predictions equal :func:`serving.models.reference_forward` within 1e-4 (checked by
``serving.embedded.check.check("torchscript", ...)`` in ``tests/integration/serving/test_torch.py``).

Idempotent: when the stamp records the current weights sha256 and exporter version and the ``.pt``
still has the recorded sha256, nothing is written (unless ``force``). A missing ``.npz`` is built
first with :func:`serving.models.build_model` (same seed -> same weights as the ONNX file). Safe
across processes (the model directory's build lock).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from serving.models.build import (_locked, add_export_to_manifest, build_model, manifest_seed, model_paths,
                                  write_json_atomic)
from serving.models import ffnn
from serving.models import resnet50 as r50
from serving.models.spec import MODELS, get_spec
from serving.models.weights import load_weights, sha256_file

EXPORTER_VERSION = 1


def torchscript_path(name: str, models_dir: Path | str | None = None) -> Path:
    """``<models_dir>/<name>/<name>.torchscript.pt``."""
    return model_paths(name, models_dir).model_dir / f"{name}.torchscript.pt"


def stamp_path(name: str, models_dir: Path | str | None = None) -> Path:
    return model_paths(name, models_dir).model_dir / f"{name}.torchscript.json"


# ---------------------------------------------------------------------------------- modules

def _ffnn(torch: Any, w: Mapping[str, np.ndarray]) -> Any:
    nn = torch.nn

    class FFNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers = []
            for i, (fan_in, fan_out) in enumerate(ffnn.LAYERS):
                lin = nn.Linear(fan_in, fan_out)
                lin.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(w[f"dense{i}.w"].T)))
                lin.bias.data.copy_(torch.from_numpy(w[f"dense{i}.b"]))
                layers.append(lin)
            self.hidden = nn.ModuleList(layers[:-1])
            self.out = layers[-1]

        def forward(self, x):
            h = x.reshape(x.shape[0], -1)
            for layer in self.hidden:
                h = torch.relu(layer(h))
            return self.out(h)

    return FFNN()


def _resnet50(torch: Any, w: Mapping[str, np.ndarray]) -> Any:
    nn = torch.nn

    def conv(name: str, stride: int) -> Any:
        kernel = w[f"{name}.w"]
        o, i, kh, _ = kernel.shape
        c = nn.Conv2d(i, o, kh, stride=stride, padding=kh // 2, bias=True)
        c.weight.data.copy_(torch.from_numpy(kernel))
        c.bias.data.copy_(torch.from_numpy(w[f"{name}.b"]))
        return c

    class Bottleneck(nn.Module):
        def __init__(self, b: Any) -> None:
            super().__init__()
            self.conv1 = conv(f"{b.prefix}.conv1", 1)
            self.conv2 = conv(f"{b.prefix}.conv2", b.stride)
            self.conv3 = conv(f"{b.prefix}.conv3", 1)
            self.downsample = conv(f"{b.prefix}.downsample", b.stride) if b.downsample else None

        def forward(self, x):
            h = torch.relu(self.conv1(x))
            h = torch.relu(self.conv2(h))
            h = self.conv3(h)
            sc = x
            if self.downsample is not None:
                sc = self.downsample(x)
            return torch.relu(h + sc)

    class ResNet50(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = conv("conv1", 2)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.blocks = nn.ModuleList([Bottleneck(b) for b in r50.blocks()])
            self.fc = nn.Linear(r50.FEATURES, r50.NUM_CLASSES)
            self.fc.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(w["fc.w"].T)))
            self.fc.bias.data.copy_(torch.from_numpy(w["fc.b"]))

        def forward(self, x):
            h = x.permute(0, 3, 1, 2)  # NHWC -> NCHW (a channels-last view)
            h = self.maxpool(torch.relu(self.conv1(h)))
            for block in self.blocks:
                h = block(h)
            return self.fc(h.mean(dim=(2, 3)))

    return ResNet50()


_MODULES = {"ffnn": _ffnn, "resnet50": _resnet50}


def build_module(name: str, weights: Mapping[str, np.ndarray]) -> Any:
    """The eager ``torch.nn.Module`` of ``name`` with ``weights`` (``.npz`` layout), in eval mode,
    no parameter requiring grad."""
    # torch: only in .envs/torch
    import torch

    get_spec(name)
    module = _MODULES[name](torch, weights)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


# ----------------------------------------------------------------------------------- export

def _is_current(name: str, models_dir: Path | str | None) -> bool:
    art = model_paths(name, models_dir)
    pt, sp = torchscript_path(name, models_dir), stamp_path(name, models_dir)
    if not (art.weights.is_file() and pt.is_file() and sp.is_file()):
        return False
    try:
        stamp = json.loads(sp.read_text())
        return (stamp.get("exporter_version") == EXPORTER_VERSION
                and stamp.get("weights_sha256") == sha256_file(art.weights)
                and stamp.get("bytes") == pt.stat().st_size
                and stamp.get("sha256") == sha256_file(pt))
    except (OSError, ValueError):
        return False


def export_torchscript(name: str, models_dir: Path | str | None = None, *, seed: int = 42,
                       force: bool = False) -> Path:
    """Script ``name`` from its ``.npz`` to ``<models_dir>/<name>/<name>.torchscript.pt`` (see the
    module docstring) and return that path. Needs torch; builds the ``.npz`` first if missing."""
    spec = get_spec(name)
    art = model_paths(name, models_dir)
    if not art.weights.is_file():
        build_model(name, models_dir, seed=seed)  # takes the same lock: not inside it
    out = torchscript_path(name, models_dir)
    with _locked(art.model_dir):
        if not force and _is_current(name, models_dir):
            return out
        # torch: only in .envs/torch
        import torch

        t0 = time.perf_counter()
        weights_sha = sha256_file(art.weights)
        scripted = torch.jit.script(build_module(name, load_weights(art.weights)))
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            torch.jit.save(scripted, str(tmp))
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
        entry = {"path": out.name, "bytes": out.stat().st_size, "sha256": sha256_file(out),
                 "torch_version": torch.__version__}
        stamp = {
            "name": name, "seed": manifest_seed(art), "weights_sha256": weights_sha,
            "exporter_version": EXPORTER_VERSION, **entry, "method": "torch.jit.script",
            "input_shape": [None, *spec.input_shape], "output_shape": [None, *spec.output_shape],
            "export_seconds": round(time.perf_counter() - t0, 3),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json_atomic(stamp_path(name, models_dir), stamp)
        add_export_to_manifest(art.manifest_path, "torchscript", entry)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.models.export_torch",
                                 description="Export the models' TorchScript files from their .npz weights.")
    ap.add_argument("--model", default="all", choices=[*MODELS, "all"])
    ap.add_argument("--dir", type=Path, default=None, help="models dir (default .cache/models)")
    ap.add_argument("--seed", type=int, default=42, help="seed, used only if the .npz must be built")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    names = list(MODELS) if args.model == "all" else [args.model]
    for name in names:
        t0 = time.perf_counter()
        path = export_torchscript(name, args.dir, seed=args.seed, force=args.force)
        print(f"{name}: {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
