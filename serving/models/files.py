"""Your model: a model file of your own, served and checked like the built-in ones.

``model: {path: my.onnx}`` in an experiment (or :func:`import_model_file`) reads the signature from
the file -- input and output names, dtypes, shapes, the batch axis -- and copies the file into the
models dir under a name, beside a ``manifest.json`` with the same description the built-in models
carry (:meth:`ModelSpec.manifest_fields`), plus where it came from (path, sha256) and which
reference checks its predictions. From then on every service finds it by that name
(:func:`serving.models.build.resolve_spec`), exactly like ``ffnn``.

The reference of a file model is ONNX Runtime on the CPU on the same file
(:func:`reference_outputs`), or for a TorchScript file libtorch on the CPU on it: a model trained
elsewhere checks as correct against itself.

What a file may be, today (each refusal is one line naming the file and the input):

- ONNX (``.onnx``), or TorchScript (``.pt``, read and run by libtorch in the torch environment;
  its inputs' dtypes and shapes are given in ``inputs``, its outputs learned by scoring a zero
  batch; the reference is torch on the CPU on the same file, :func:`framework_reference`);
  or a SavedModel folder (read and run by TensorFlow in the tensorflow environment: its
  ``serving_default`` signature says every input and output; the reference is TensorFlow on the
  CPU on it);
- any number of inputs and outputs: one input and one output travel in the single-tensor contract
  (``DataBatch.input``), more in the named one (``DataBatch.inputs``, see serving.models.spec);
- inputs of dtype float32/64/16, int64/32/8, uint8 or bool; every output a tensor;
- the first axis of every tensor is the batch axis (symbolic or -1, not a fixed size such as 1);
  the other axes have fixed sizes, or a size given in ``inputs: {<name>: {shape: [...]}}``;
- what synthetic inputs hold: per input ``range: [low, high]`` or ``vocab: N`` for integer ids
  (default [0, 256)), ``fill: ones`` for masks.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from crayfish.host.envs import EnvironmentError_, python_for
from serving.models.spec import ModelSpec, TensorSpec
from serving.models.weights import sha256_file

FORMAT_ONNX = "onnx"
FORMAT_TORCHSCRIPT = "torchscript"
FORMAT_SAVEDMODEL = "savedmodel"
REFERENCE_ORT = "onnxruntime-cpu"
# The reference of a file of each format: its own framework on the CPU.
REFERENCES = {FORMAT_ONNX: REFERENCE_ORT, FORMAT_TORCHSCRIPT: "torch-cpu", FORMAT_SAVEDMODEL: "tensorflow-cpu"}
# The environment (crayfish.host.envs) whose framework reads a format (ONNX Runtime: every one).
FRAMEWORK_ENVIRONMENT = {FORMAT_TORCHSCRIPT: "torch", FORMAT_SAVEDMODEL: "tensorflow"}
# References that run in another environment: computed for a whole pool at once.
FRAMEWORK_REFERENCES = tuple(REFERENCES[f] for f in FRAMEWORK_ENVIRONMENT)
# What serves a file of each format (embedded backends; noop / sleep are calibrations of any).
FORMAT_BACKENDS = {FORMAT_ONNX: ("onnxruntime", "noop", "sleep"), FORMAT_TORCHSCRIPT: ("torchscript", "noop", "sleep"),
                   FORMAT_SAVEDMODEL: ("savedmodel", "noop", "sleep")}
# Where the copy goes in the models dir: the name each backend looks for.
_TARGET = {FORMAT_ONNX: "{name}.onnx", FORMAT_TORCHSCRIPT: "{name}.torchscript.pt", FORMAT_SAVEDMODEL: "savedmodel"}
# ONNX Runtime's type strings -> numpy dtype names
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
               "tensor(uint8)": "uint8", "tensor(bool)": "bool"}
SUPPORTED_INPUT_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool")
_INT_DTYPES = ("int64", "int32", "int8", "uint8")


class ModelFileError(ValueError):
    """A model file that cannot be served as it is; the message is one line naming file and tensor."""


@dataclass(frozen=True)
class TensorSignature:
    name: str
    dtype: str                      # numpy dtype name, or the file's own type string when unknown
    shape: tuple[int | None, ...]   # None: a free axis (symbolic or -1)

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype} [{dims}]"


@dataclass(frozen=True)
class Signature:
    path: Path
    format: str
    inputs: tuple[TensorSignature, ...]
    outputs: tuple[TensorSignature, ...]

    def describe(self) -> str:
        lines = [f"{self.path} ({self.format})"]
        lines += [f"  input  {t.describe()}" for t in self.inputs]
        lines += [f"  output {t.describe()}" for t in self.outputs]
        return "\n".join(lines)


def model_format(path: Path) -> str:
    if path.is_dir():
        return "savedmodel"
    return {".onnx": FORMAT_ONNX, ".pt": "torchscript", ".pth": "torchscript"}.get(path.suffix.lower(), "unknown")


def _ort_session(path: Path):
    import onnxruntime as ort  # lazy: the registry is imported in environments without ORT (triton)

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _tensor(arg) -> TensorSignature:
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))
    return TensorSignature(arg.name, _ORT_DTYPES.get(arg.type, arg.type), shape)


def read_signature(path: Path | str, inputs: Mapping[str, Mapping[str, Any]] | None = None) -> Signature:
    """The signature written in a model file (ONNX: read by ONNX Runtime, nothing run; TorchScript:
    by libtorch in the torch environment, with the dtypes and shapes ``inputs`` gives, see
    :mod:`serving.models.framework`)."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    fmt = model_format(path)
    if fmt == FORMAT_SAVEDMODEL and not (path / "saved_model.pb").is_file():
        raise ModelFileError(f"{path}: a folder, but not a SavedModel (no saved_model.pb in it)")
    if fmt in (FORMAT_TORCHSCRIPT, FORMAT_SAVEDMODEL):
        return _framework_signature(path, fmt, inputs or {})
    if fmt != FORMAT_ONNX:
        raise ModelFileError(f"{path}: not a model format served here ({path.suffix or 'no suffix'}); give an ONNX "
                             "(.onnx) or TorchScript (.pt) file or a SavedModel folder")
    try:
        sess = _ort_session(path)
    except Exception as exc:  # ORT raises its own exception types for unreadable graphs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a loadable ONNX model ({first})") from None
    return Signature(path, fmt, tuple(_tensor(a) for a in sess.get_inputs()),
                     tuple(_tensor(a) for a in sess.get_outputs()))


def _framework_signature(path: Path, fmt: str, inputs: Mapping[str, Mapping[str, Any]]) -> Signature:
    given = {k: {f: v[f] for f in ("shape", "dtype") if f in v} for k, v in inputs.items()}
    what = {FORMAT_TORCHSCRIPT: ("TorchScript", "libtorch"), FORMAT_SAVEDMODEL: ("SavedModel", "TensorFlow")}[fmt]
    try:
        python = python_for(FRAMEWORK_ENVIRONMENT[fmt], build=False)
    except EnvironmentError_ as exc:
        raise ModelFileError(f"{path}: a {what[0]} is read by {what[1]}: {exc}") from None
    proc = subprocess.run([python, "-m", "serving.models.framework", "signature", str(path),
                           "--inputs", json.dumps(given)], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelFileError(f"{path}: not a loadable {what[0]} model ({last})")
    sig = json.loads(proc.stdout)

    def tensor(t):
        shape = tuple(t["shape"]) if t["shape"] is not None else ()
        return TensorSignature(t["name"], t["dtype"] or "?", shape)

    for t in sig["inputs"]:
        if t["dtype"] is None or t["shape"] is None:
            raise ModelFileError(f"{path}: input {t['name']}: a TorchScript file does not say its dtype and shape; "
                                 f"give them as inputs: {{{t['name']}: {{dtype: float32, shape: [...]}}}}")
    return Signature(path, fmt, tuple(tensor(t) for t in sig["inputs"]), tuple(tensor(t) for t in sig["outputs"]))


def spec_from_signature(sig: Signature, name: str,
                        inputs: Mapping[str, Mapping[str, Any]] | None = None) -> ModelSpec:
    """The per-item :class:`ModelSpec` of a file (``inputs``: overrides per input name: ``shape`` of
    one item, ``range`` [low, high) or ``vocab`` (= [0, vocab)) of an integer input's synthetic
    values, ``fill: ones`` for masks); :class:`ModelFileError` naming the file and the tensor when
    it does not fit."""
    inputs = dict(inputs or {})
    unknown = sorted(set(inputs) - {t.name for t in sig.inputs})
    if unknown:
        raise ModelFileError(f"{sig.path}: inputs.{unknown[0]}: the file has no such input "
                             f"(inputs: {', '.join(t.name for t in sig.inputs)})")
    ins = tuple(_input_spec(sig.path, t, inputs.get(t.name, {})) for t in sig.inputs)
    outs = []
    for t in sig.outputs:
        if t.dtype not in _ORT_DTYPES.values():
            raise ModelFileError(f"{sig.path}: output {t.name}: type {t.dtype} is not a tensor; export the "
                                 "model so that every output is a tensor (e.g. skl2onnx: zipmap=False)")
        outs.append(TensorSpec(t.name, t.dtype, _item_shape(sig.path, "output", t, None)))
    return ModelSpec.of_tensors(name, ins, outs, description=f"model file {sig.path.name}")


def _input_spec(path: Path, t: TensorSignature, override: Mapping[str, Any]) -> TensorSpec:
    if t.dtype not in SUPPORTED_INPUT_DTYPES:
        raise ModelFileError(f"{path}: input {t.name}: dtype {t.dtype}; supported: "
                             f"{', '.join(SUPPORTED_INPUT_DTYPES)}")
    shape = _item_shape(path, "input", t, override.get("shape"))
    if override.get("dtype") not in (None, t.dtype):
        raise ModelFileError(f"{path}: inputs.{t.name}.dtype: {override['dtype']} does not match the file's {t.dtype}")
    low = high = None
    if "vocab" in override or "range" in override:
        if t.dtype not in _INT_DTYPES:
            raise ModelFileError(f"{path}: inputs.{t.name}: range/vocab is for integer inputs; {t.name} is {t.dtype}")
        low, high = (0, int(override["vocab"])) if "vocab" in override else map(int, override["range"])
        info = np.iinfo(t.dtype)
        if not info.min <= low < high <= int(info.max) + 1:
            raise ModelFileError(f"{path}: inputs.{t.name}: value range [{low}, {high}) is empty or "
                                 f"outside {t.dtype}")
    fill = override.get("fill", "random")
    if fill not in ("random", "ones"):
        raise ModelFileError(f"{path}: inputs.{t.name}.fill: {fill!r}; use random or ones")
    return TensorSpec(t.name, t.dtype, shape, low, high, fill)


def _item_shape(path: Path, kind: str, t: TensorSignature, override: Sequence[int] | None) -> tuple[int, ...]:
    if not t.shape:
        raise ModelFileError(f"{path}: {kind} {t.name}: a scalar; the first axis must be the batch axis")
    if t.shape[0] is not None:
        raise ModelFileError(f"{path}: {kind} {t.name}: first axis has fixed size {t.shape[0]}; it must "
                             "be the batch axis (symbolic or -1): export the model with a dynamic batch axis")
    rest = t.shape[1:]
    if override is not None:
        given = tuple(int(d) for d in override)
        if len(given) != len(rest) or any(f is not None and f != g for f, g in zip(rest, given)) \
                or any(g < 1 for g in given):
            raise ModelFileError(f"{path}: inputs.{t.name}.shape: {list(given)} does not fit the file's "
                                 f"item shape {['?' if d is None else d for d in rest]}")
        return given
    if any(d is None for d in rest):
        hint = f"; give it as inputs: {{{t.name}: {{shape: [...]}}}}" if kind == "input" else ""
        raise ModelFileError(f"{path}: {kind} {t.name}: item shape {['?' if d is None else d for d in rest]} "
                             f"has free axes besides the batch{hint}")
    return tuple(rest)


def default_name(path: Path | str) -> str:
    """A model name from a file name: letters, digits, ``-`` and ``_``."""
    stem = Path(path).name.removesuffix(Path(path).suffix) or "model"
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "model"


def import_model_file(path: Path | str, models_dir: Path | str, name: str | None = None,
                      inputs: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Copy the file into ``<models_dir>/<name>/<name>.onnx`` (TorchScript: ``<name>.torchscript.pt``,
    where the torchscript backend looks) with its ``manifest.json``; returns the
    manifest's path. Idempotent: an unchanged file (same sha256, same overrides) is not copied again.
    """
    path = Path(path).resolve()
    sig = read_signature(path, inputs)
    name = name or default_name(path)
    spec = spec_from_signature(sig, name, inputs)
    sha = _sha256(path)
    d = Path(models_dir) / name
    target, manifest_path = d / _TARGET[sig.format].format(name=name), d / "manifest.json"
    source = {"path": str(path), "format": sig.format, "sha256": sha, "bytes": _size(path),
              "inputs": {k: dict(v) for k, v in (inputs or {}).items()}}
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except ValueError:
            old = {}
        if old.get("source") == source and target.exists() and _sha256(target) == sha:
            return manifest_path
        if "source" not in old:
            raise ModelFileError(f"{path}: name {name!r} is a built-in model in {models_dir}; "
                                 "give the file another name (model: {path: ..., name: ...})")
    d.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if path.is_dir():
        shutil.copytree(path, tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    else:
        shutil.copyfile(path, tmp)
        tmp.replace(target)
    manifest = {
        **spec.manifest_fields(),
        "source": source,
        "reference": REFERENCES[sig.format],
        "signature": {"inputs": [t.describe() for t in sig.inputs],
                      "outputs": [t.describe() for t in sig.outputs]},
        "files": {sig.format: {"path": target.name, "bytes": _size(target), "sha256": sha}},
        "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = manifest_path.with_name(".manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(manifest_path)
    return manifest_path


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _sha256(path: Path) -> str:
    """A file's sha256; a folder's: the sha256 of its files' relative paths and sha256s, sorted."""
    if not path.is_dir():
        return sha256_file(path)
    import hashlib

    h = hashlib.sha256()
    for p in _files(path):
        h.update(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in _files(path))


def is_file_model(manifest: Mapping[str, Any]) -> bool:
    return "source" in manifest


_SESSIONS: dict[tuple[Path, int], Any] = {}   # (file, its mtime): a re-imported file gets a new session


def reference_outputs(onnx_path: Path | str, spec: ModelSpec, x):
    """The reference predictions of a file model: ONNX Runtime on the CPU, on the same file; an
    array for a model with one output, ``{output name: array}`` for several."""
    path = Path(onnx_path)
    key = (path, path.stat().st_mtime_ns)
    sess = _SESSIONS.get(key)
    if sess is None:
        sess = _SESSIONS[key] = _ort_session(path)
    feeds = x if isinstance(x, Mapping) else {spec.input_name: x}
    feeds = {t.name: np.asarray(feeds[t.name], dtype=t.dtype) for t in spec.inputs}
    names = [t.name for t in spec.outputs]
    ys = sess.run(names, feeds)
    return dict(zip(names, ys)) if spec.multi_output else ys[0]


def framework_reference(path: Path | str, spec: ModelSpec, batches: Sequence) -> list:
    """The reference predictions of a TorchScript file or a SavedModel for many batches at once
    (one run of ``serving.models.framework reference`` in its framework's environment): per batch
    an array, or ``{output name: array}`` for several outputs."""
    import tempfile

    python = python_for(FRAMEWORK_ENVIRONMENT[model_format(Path(path))], build=False)
    with tempfile.TemporaryDirectory(prefix="crayfish-ref-") as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        arrays = {}
        for k, x in enumerate(batches):
            feeds = x if isinstance(x, Mapping) else {spec.input_name: x}
            arrays.update({f"{k}/{t.name}": np.asarray(feeds[t.name], dtype=t.dtype) for t in spec.inputs})
        np.savez(inp, **arrays)
        manifest = {"inputs": [{"name": t.name} for t in spec.inputs], "outputs": [{"name": t.name} for t in spec.outputs]}
        proc = subprocess.run([python, "-m", "serving.models.framework", "reference", str(path), "--spec",
                               json.dumps(manifest), "--inputs", str(inp), "--out", str(out)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{path}: the framework's reference failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        with np.load(out) as z:
            results = [{t.name: z[f"{k}/{t.name}"] for t in spec.outputs} for k in range(len(batches))]
    return results if spec.multi_output else [r[spec.output_name] for r in results]
