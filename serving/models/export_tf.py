"""TensorFlow SavedModel export of the model zoo, from the SAME seeded ``.npz`` as the ONNX model.

Runs in the ``tensorflow`` environment (``envs/tensorflow``; TensorFlow is imported inside the
functions, so this module itself imports anywhere)::

    .envs/tensorflow/bin/python -m serving.models.export_tf [--model ffnn|resnet50|all]
        [--dir DIR] [--seed 42] [--input-key input_1] [--force]

or ``export_savedmodel("ffnn")`` from code (``python_for("tensorflow")`` gives the interpreter).

What it writes (next to the ONNX file, see :mod:`serving.models.build`)::

    <models_dir>/<name>/savedmodel/           the SavedModel (saved_model.pb + variables/)
    <models_dir>/<name>/savedmodel.json       export stamp: weights sha256, seed, input key,
                                              TensorFlow version, exporter version
    manifest.json  "files" gains "savedmodel" (path, bytes of saved_model.pb, its sha256)

The model is a plain ``tf.Module`` (no Keras layers, so nothing depends on the Keras version)
with one signature, ``serving_default``:

- input key ``input_key`` (default ``input_1``, the key the original Crayfish used with TF
  Serving): float32 ``[None, *spec.input_shape]`` -- ffnn ``[b, 1, 784]``, resnet50
  ``[b, 224, 224, 3]`` NHWC;
- output key ``output``: float32 ``[None, *spec.output_shape]``.

Weights are ``tf.Variable`` s loaded from ``<name>.npz`` (:func:`serving.models.load_weights`):
dense kernels stay ``[in, out]``; conv kernels are transposed OIHW -> HWIO. ResNet50 uses the
same folded-BN graph as :mod:`serving.models.resnet50`, with *explicit symmetric* padding
(``k // 2`` on every side, and ``-inf`` padding before the 3x3/2 max pool) instead of TF's
``SAME`` (which pads stride-2 layers asymmetrically and would not match the ONNX graph or
:func:`serving.models.reference_forward`). Predictions equal the reference within 1e-4
(``tests/integration/serving/test_tensorflow.py``).

Idempotent: when ``savedmodel.json`` records the current weights sha256, input key and exporter
version, and ``saved_model.pb`` is there, nothing is written (unless ``force``). A missing
``.npz`` is built first with :func:`serving.models.build_model` (same seed -> same weights as
the ONNX file). Safe across processes (the model directory's build lock).

TF Serving (the real server, in a container) wants ``<base_path>/<version>/saved_model.pb``:
mount ``<models_dir>/<name>/savedmodel`` as ``/models/<name>/1``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from serving.models.build import (_locked, add_export_to_manifest, build_model, manifest_seed, model_paths,
                                  write_json_atomic)
from serving.models import ffnn, resnet50
from serving.models.spec import MODELS, get_spec
from serving.models.weights import load_weights, sha256_file

EXPORTER_VERSION = 1
SIGNATURE = "serving_default"
DEFAULT_INPUT_KEY = "input_1"
OUTPUT_KEY = "output"


def savedmodel_dir(name: str, models_dir: Path | str | None = None) -> Path:
    """``<models_dir>/<name>/savedmodel`` (may not exist yet)."""
    return model_paths(name, models_dir).model_dir / "savedmodel"


def stamp_path(name: str, models_dir: Path | str | None = None) -> Path:
    return model_paths(name, models_dir).model_dir / "savedmodel.json"


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ INFO/WARNING chatter (must run before ``import tensorflow``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ------------------------------------------------------------------------------- tf.Modules

def _ffnn_module(tf: Any, w: Mapping[str, np.ndarray]) -> Any:
    class FFNN(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="crayfish_ffnn")
            self.kernels = [tf.Variable(w[f"{n}.w"], trainable=False, name=f"{n}_w")
                            for n in ffnn.layer_names()]
            self.biases = [tf.Variable(w[f"{n}.b"], trainable=False, name=f"{n}_b")
                           for n in ffnn.layer_names()]

        @tf.function
        def serve(self, x):
            h = tf.reshape(x, [-1, ffnn.LAYERS[0][0]])
            last = len(self.kernels) - 1
            for i, (k, b) in enumerate(zip(self.kernels, self.biases)):
                h = tf.matmul(h, k) + b
                if i < last:
                    h = tf.nn.relu(h)
            return {OUTPUT_KEY: h}

    return FFNN()


def _resnet50_module(tf: Any, w: Mapping[str, np.ndarray]) -> Any:
    convs = list(resnet50.conv_shapes())

    class ResNet50(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="crayfish_resnet50")
            # OIHW -> HWIO
            self.k = {n: tf.Variable(np.ascontiguousarray(w[f"{n}.w"].transpose(2, 3, 1, 0)),
                                     trainable=False, name=n.replace(".", "_") + "_w") for n in convs}
            self.b = {n: tf.Variable(w[f"{n}.b"], trainable=False, name=n.replace(".", "_") + "_b")
                      for n in convs}
            self.fc_w = tf.Variable(w["fc.w"], trainable=False, name="fc_w")
            self.fc_b = tf.Variable(w["fc.b"], trainable=False, name="fc_b")

        def _conv(self, x, name: str, stride: int):
            kh = resnet50.conv_shapes()[name][2]
            p = kh // 2
            pad = "VALID" if p == 0 else [[0, 0], [p, p], [p, p], [0, 0]]
            y = tf.nn.conv2d(x, self.k[name], strides=stride, padding=pad)
            return tf.nn.bias_add(y, self.b[name])

        @tf.function
        def serve(self, x):
            h = tf.nn.relu(self._conv(x, "conv1", 2))
            h = tf.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-np.inf)
            h = tf.nn.max_pool2d(h, ksize=3, strides=2, padding="VALID")
            for blk in resnet50.blocks():
                p = blk.prefix
                r = tf.nn.relu(self._conv(h, f"{p}.conv1", 1))
                r = tf.nn.relu(self._conv(r, f"{p}.conv2", blk.stride))
                r = self._conv(r, f"{p}.conv3", 1)
                sc = self._conv(h, f"{p}.downsample", blk.stride) if blk.downsample else h
                h = tf.nn.relu(r + sc)
            feats = tf.reduce_mean(h, axis=[1, 2])
            return {OUTPUT_KEY: tf.matmul(feats, self.fc_w) + self.fc_b}

    return ResNet50()


_MODULES = {"ffnn": _ffnn_module, "resnet50": _resnet50_module}


# ----------------------------------------------------------------------------------- export

def _is_current(name: str, models_dir: Path | str | None, input_key: str) -> bool:
    art = model_paths(name, models_dir)
    sp = stamp_path(name, models_dir)
    if not (art.weights.is_file() and sp.is_file()
            and (savedmodel_dir(name, models_dir) / "saved_model.pb").is_file()):
        return False
    try:
        stamp = json.loads(sp.read_text())
        return (stamp.get("exporter_version") == EXPORTER_VERSION
                and stamp.get("input_key") == input_key
                and stamp.get("weights_sha256") == sha256_file(art.weights))
    except (OSError, ValueError):
        return False


def export_savedmodel(name: str, models_dir: Path | str | None = None, *, seed: int = 42,
                      input_key: str = DEFAULT_INPUT_KEY, force: bool = False) -> Path:
    """Export ``name`` to ``<models_dir>/<name>/savedmodel/`` (see the module docstring) and
    return that directory. Needs TensorFlow; builds the ``.npz`` first if it is missing."""
    spec = get_spec(name)
    if not input_key or not input_key.replace("_", "a").isalnum():
        raise ValueError(f"input key must be a non-empty identifier, got {input_key!r}")
    art = model_paths(name, models_dir)
    if not art.weights.is_file():
        build_model(name, models_dir, seed=seed)
    out = savedmodel_dir(name, models_dir)
    with _locked(art.model_dir):
        if not force and _is_current(name, models_dir, input_key):
            return out
        quiet_tensorflow()
        # tensorflow: only in .envs/tensorflow (and after quiet_tensorflow)
        import tensorflow as tf

        t0 = time.perf_counter()
        weights_sha = sha256_file(art.weights)
        module = _MODULES[name](tf, load_weights(art.weights))
        fn = module.serve.get_concrete_function(
            tf.TensorSpec([None, *spec.input_shape], tf.float32, name=input_key))
        tmp = out.with_name(f".savedmodel.{os.getpid()}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            tf.saved_model.save(module, str(tmp), signatures={SIGNATURE: fn})
            old = out.with_name(f".savedmodel.{os.getpid()}.old")
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
            if old.exists():
                shutil.rmtree(old)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        pb = out / "saved_model.pb"
        stamp = {
            "name": name, "seed": manifest_seed(art), "weights_sha256": weights_sha,
            "exporter_version": EXPORTER_VERSION, "tensorflow_version": tf.__version__,
            "signature": SIGNATURE, "input_key": input_key, "output_key": OUTPUT_KEY,
            "input_shape": [None, *spec.input_shape], "output_shape": [None, *spec.output_shape],
            "export_seconds": round(time.perf_counter() - t0, 3),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json_atomic(stamp_path(name, models_dir), stamp)
        add_export_to_manifest(art.manifest_path, "savedmodel", {"path": "savedmodel", "saved_model_pb_bytes": pb.stat().st_size,
                                             "saved_model_pb_sha256": sha256_file(pb),
                                             "input_key": input_key})
    return out


def load_signature(path: Path | str, signature: str = SIGNATURE):
    """``(loaded, fn, input_key, output_keys)`` of a SavedModel's signature (needs TensorFlow)."""
    quiet_tensorflow()
    # tensorflow: only in .envs/tensorflow (and after quiet_tensorflow)
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    if signature not in loaded.signatures:
        raise KeyError(f"{path}: no signature {signature!r}; has {sorted(loaded.signatures)}")
    fn = loaded.signatures[signature]
    _, kwargs = fn.structured_input_signature
    if len(kwargs) != 1:
        raise ValueError(f"{path}: signature {signature!r} has inputs {sorted(kwargs)}, expected one")
    return loaded, fn, next(iter(kwargs)), sorted(fn.structured_outputs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.models.export_tf",
                                 description="Export the models' SavedModels from their .npz weights.")
    ap.add_argument("--model", default="all", choices=[*MODELS, "all"])
    ap.add_argument("--dir", type=Path, default=None, help="models dir (default .cache/models)")
    ap.add_argument("--seed", type=int, default=42, help="seed, used only if the .npz must be built")
    ap.add_argument("--input-key", default=DEFAULT_INPUT_KEY)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    names = list(MODELS) if args.model == "all" else [args.model]
    for name in names:
        t0 = time.perf_counter()
        path = export_savedmodel(name, args.dir, seed=args.seed, input_key=args.input_key, force=args.force)
        print(f"{name}: {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
