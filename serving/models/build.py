"""Building, caching and locating model artifacts.

Layout under a models dir (default ``$CRAYFISH_MODELS_DIR`` or ``<repo>/.cache/models``)::

    <models_dir>/<name>/<name>.npz        canonical weights (every format is exported from these)
    <models_dir>/<name>/<name>.onnx       ONNX, opset OPSET, IR version IR_VERSION, dynamic "batch"
    <models_dir>/<name>/manifest.json     the model's description (tensor names, dtypes, shapes: what
                                          readers without the registry use, e.g. the Java worker),
                                          seed, parameter count, sha256 + size of every file
    <models_dir>/<name>/.lock             flock()ed while building (concurrent builders wait)

Other format exporters (TorchScript, SavedModel, ...) should put their files in the same
``<models_dir>/<name>/`` directory, load the ``.npz`` with
:func:`serving.models.weights.load_weights`, and may add their own entry to the manifest's
``files`` (keep ``weights`` and ``onnx`` intact).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from crayfish.host.paths import models_dir as host_models_dir
from serving.models.files import (FORMAT_ONNX, REFERENCE_ORT, framework_reference, is_file_model,
                                  reference_outputs)
from serving.models.registry import layout, model_module
from serving.models.spec import MODELS, ModelSpec, get_spec
from serving.models.weights import load_weights, param_count, save_npz, sha256_file

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; readable by older runtimes too
# Bump when the init, graph or file layout changes: cached builds with another version rebuild.
BUILDER_VERSION = 1


@dataclass(frozen=True)
class ModelArtifacts:
    """Where one model's files live (they may not exist yet: see :meth:`exists`)."""

    name: str
    model_dir: Path
    weights: Path     # <name>.npz
    onnx: Path        # <name>.onnx
    manifest_path: Path

    def exists(self) -> bool:
        if not self.manifest_path.is_file():
            return False
        if self.is_file_model():     # the imported file, whatever its format
            return all((self.model_dir / f["path"]).exists() for f in self.manifest["files"].values())
        return self.onnx.is_file() and self.weights.is_file()

    def is_file_model(self) -> bool:
        """A user's model file imported by serving.models.files (no weights: the file is the model)."""
        try:
            return is_file_model(self.manifest)
        except (OSError, ValueError):
            return False

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text())

    @property
    def spec(self) -> ModelSpec:
        """The registry's description of the model (a file model's: its manifest's)."""
        return MODELS[self.name] if self.name in MODELS else self.built_spec()

    def built_spec(self) -> ModelSpec:
        """The description the built model's manifest.json carries (what was built, whatever this
        process has registered); ValueError when the manifest has none."""
        return ModelSpec.from_manifest(self.manifest)


def default_models_dir() -> Path:
    """``$CRAYFISH_MODELS_DIR``, else ``<cache>/models`` (:mod:`crayfish.host.paths`)."""
    return host_models_dir()


def model_paths(name: str, models_dir: Path | str | None = None) -> ModelArtifacts:
    """Where the files of ``name`` live: a built-in model, or a model file imported into
    ``models_dir`` (:mod:`serving.models.files`); KeyError naming the known models otherwise."""
    root = Path(models_dir) if models_dir is not None else default_models_dir()
    if name not in MODELS and not _imported(root, name):
        get_spec(name)  # raises, naming the known models
    d = root / name
    return ModelArtifacts(name=name, model_dir=d, weights=d / f"{name}.npz", onnx=d / f"{name}.onnx",
                          manifest_path=d / "manifest.json")


def _imported(root: Path, name: str) -> bool:
    try:
        return is_file_model(json.loads((root / name / "manifest.json").read_text()))
    except (OSError, ValueError):
        return False


def known_model(name: str, models_dir: Path | str | None = None) -> bool:
    """A built-in model, or a model file imported into ``models_dir``."""
    root = Path(models_dir) if models_dir is not None else default_models_dir()
    return name in MODELS or _imported(root, name)


def resolve_spec(name: str, models_dir: Path | str | None = None) -> ModelSpec:
    """The description of ``name``: a built-in model's from the registry, an imported model file's
    from its manifest in ``models_dir``; KeyError naming the known models otherwise. Every service
    that gets a model name (worker, server, generator, collector) asks here."""
    if name in MODELS:
        return MODELS[name]
    return model_paths(name, models_dir).built_spec()


def reference_predictions(name: str, models_dir: Path | str | None, x):
    """The reference outputs for ``x`` (an array, or ``{input name: array}``; :func:`reference_of`
    says which reference that is): an array, or ``{output name: array}`` for several outputs."""
    return reference_predictions_many(name, models_dir, [x])[0]


def reference_predictions_many(name: str, models_dir: Path | str | None, batches: list) -> list:
    """:func:`reference_predictions` of many batches: one framework run for a TorchScript file or a
    SavedModel (libtorch and TensorFlow live in other environments), else one batch at a time."""
    art = model_paths(name, models_dir)
    if art.is_file_model():
        spec = art.built_spec()
        fmt = art.manifest["source"]["format"]
        if fmt != FORMAT_ONNX:       # libtorch / TensorFlow: in their own environment, all at once
            return framework_reference(art.model_dir / art.manifest["files"][fmt]["path"], spec, batches)
        return [reference_outputs(art.onnx, spec, x) for x in batches]
    one = MODELS[name].input_name
    # a built-in model's one input may come by name
    return [reference_forward(name, art.weights, x[one] if isinstance(x, dict) else x) for x in batches]


def reference_of(name: str, models_dir: Path | str | None = None) -> str:
    """Which reference checks the predictions of ``name``: the numpy forward pass of a built-in
    model, ONNX Runtime on the CPU on the file of an imported model (named with its sha256)."""
    art = model_paths(name, models_dir)
    if art.is_file_model():
        source = art.manifest["source"]
        return f"{art.manifest.get('reference', REFERENCE_ORT)} on {source['path']} (sha256 {source['sha256']})"
    return f"numpy forward pass of {name} (serving.models.reference_forward)"


def model_facts(name: str, models_dir: Path | str | None = None) -> dict[str, Any]:
    """What a run's results say about its model: name, kind, the description (tensor names, dtypes,
    shapes), the reference its predictions are checked against and, for a user's model file, the
    file, its sha256 and the signature read from it."""
    art = model_paths(name, models_dir)
    facts: dict[str, Any] = {"name": name, "kind": "file" if art.is_file_model() else "built-in",
                             "spec": art.spec.manifest_fields(), "reference": reference_of(name, models_dir)}
    if art.is_file_model():
        m = art.manifest
        facts.update(file=m["source"]["path"], format=m["source"]["format"], sha256=m["source"]["sha256"],
                     signature=m["signature"])
        if "zoo" in m:      # built here by its framework (serving.models.zoo): how, and the export check
            facts["zoo"] = m["zoo"]
    return facts


def _is_current(art: ModelArtifacts, seed: int) -> bool:
    if not art.exists():
        return False
    try:
        m = art.manifest
        if m.get("seed") != seed or m.get("builder_version") != BUILDER_VERSION or m.get("opset") != OPSET:
            return False
        for key, path in (("weights", art.weights), ("onnx", art.onnx)):
            entry = m["files"][key]
            if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


@contextmanager
def _locked(d: Path) -> Iterator[None]:
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def build_model(name: str, out_dir: Path | str | None = None, seed: int = 42,
                force: bool = False) -> ModelArtifacts:
    """Create ``<out_dir>/<name>/{<name>.npz, <name>.onnx, manifest.json}`` from ``seed``.

    Idempotent: when the manifest records the same seed and builder version and both files still
    match their sha256, nothing is written (unless ``force``). Safe across processes (file lock).
    """
    # onnx only to export: scorers import this module in environments without onnx (triton)
    import onnx

    spec = get_spec(name)
    impl = model_module(name)
    art = model_paths(name, out_dir)
    with _locked(art.model_dir):
        if not force and _is_current(art, seed):
            return art
        t0 = time.perf_counter()
        weights = impl.init_weights(seed)
        n_params = param_count(weights)
        if n_params != impl.PARAM_COUNT:  # pragma: no cover - guards the architecture tables
            raise AssertionError(f"{name}: built {n_params} params, expected {impl.PARAM_COUNT}")
        save_npz(art.weights, weights)
        doc = f"Crayfish Mesh {name}, seed {seed}, builder v{BUILDER_VERSION}; weights {art.weights.name}"
        model = impl.to_onnx(weights, opset=OPSET, doc=doc)
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        _write_atomic(art.onnx, model.SerializeToString())
        manifest = {
            **spec.manifest_fields(),   # name, tensor names, dtypes, shapes (ModelSpec.from_manifest)
            "seed": seed,
            "builder_version": BUILDER_VERSION,
            "param_count": n_params,
            "opset": OPSET,
            "ir_version": IR_VERSION,
            "layout": layout(name),
            "files": {
                key: {"path": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
                for key, p in (("weights", art.weights), ("onnx", art.onnx))
            },
            "build_seconds": round(time.perf_counter() - t0, 3),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_atomic(art.manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    return art


def build_all(out_dir: Path | str | None = None, seed: int = 42, force: bool = False) -> dict[str, ModelArtifacts]:
    return {name: build_model(name, out_dir, seed=seed, force=force) for name in MODELS}


def reference_forward(name: str, weights_npz_path: Path | str, x: np.ndarray) -> np.ndarray:
    """The numpy float32 forward pass of ``name`` with the weights in ``weights_npz_path``.

    ``x``: ``[b, *spec.input_shape]``; returns ``[b, *spec.output_shape]`` float32. Reads the
    weights file on every call (ResNet50: ~100 MB), so batch up the inputs you want to check.
    """
    spec = get_spec(name)
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:] != spec.input_shape:
        raise ValueError(f"{name}: expected input [b, {', '.join(map(str, spec.input_shape))}], "
                         f"got {list(x.shape)}")
    return model_module(name).forward(load_weights(Path(weights_npz_path)), x)


# -- bookkeeping shared by the exporters of other formats (export_torch, export_tf) -----------------

def manifest_seed(art) -> int | None:
    """The seed recorded in a model's manifest, or None when there is none."""
    try:
        return art.manifest.get("seed")
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def add_export_to_manifest(path: Path, fmt: str, entry: dict) -> None:
    """Record an exported format under ``files.<fmt>`` of the model's manifest (if there is one)."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # no manifest (weights built elsewhere): the exporter's stamp file is enough
    manifest.setdefault("files", {})[fmt] = entry
    write_json_atomic(path, manifest)
