"""Model archives (``.mar``) for TorchServe, made with the real ``torch-model-archiver``.

Runs in the ``torch`` environment (the launcher calls it there)::

    .envs/torch/bin/python -m serving.torchserve.build --store DIR [--models-dir DIR]
        --archive ffnn --archive 'ffnn-hung={"model": "ffnn", "sleep_s": 5}'

For every served name it (1) finds the model file: a built-in model's TorchScript export from the
seeded ``.npz`` (:func:`serving.models.export_torch.export_torchscript`, idempotent), or a model
file of one's own as imported into the models dir (:mod:`serving.models.files`:
``<name>.torchscript.pt``, run by the ``torchscript`` backend, or ``<name>.onnx``, run by the
``onnxruntime`` backend, with its ``manifest.json``), (2) writes the handler's ``crayfish.json``
and (3) runs ``torch-model-archiver --model-name <served> --version 1.0 --serialized-file <file>
--handler handler.py --extra-files crayfish.json[,manifest.json] --export-path <store>``. The
result is ``<store>/<served>.mar`` plus ``<store>/<served>.mar.json``, a stamp with the sha256 of
every input (model file, manifest, handler, wire module, settings) and the archiver version: an
archive whose stamp matches is not rebuilt. Builds in one store are serialised by a file lock, so
concurrent launchers can share a store.

Archive spec (served name -> settings): ``model`` (a name in :data:`serving.models.MODELS` or a
model file imported into the models dir, default: the served name) and ``sleep_s`` (seconds the
handler sleeps per call, default 0).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Mapping

from serving.models.build import known_model, model_paths
from serving.models.export_torch import export_torchscript
from serving.models.files import FORMAT_BACKENDS, FORMAT_ONNX, FORMAT_TORCHSCRIPT
from serving.models.spec import MODELS

HERE = Path(__file__).resolve().parent
HANDLER = HERE / "handler.py"
WIRE = HERE / "wire.py"
ARCHIVE_VERSION = "1.0"
BUILD_VERSION = 2
SETTINGS_KEYS = {"model", "sleep_s"}
# the embedded backend the handler runs a model file of each format with (a SavedModel needs
# TensorFlow, which the torch environment does not have: not served here)
FILE_BACKENDS = {fmt: FORMAT_BACKENDS[fmt][0] for fmt in (FORMAT_ONNX, FORMAT_TORCHSCRIPT)}


def normalize_spec(served: str, settings: Mapping[str, Any] | None,
                   models_dir: Path | None = None) -> dict[str, Any]:
    """``{"model": ..., "sleep_s": ...}`` for one archive; raises ``ValueError`` on bad settings."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - SETTINGS_KEYS)
    if unknown:
        raise ValueError(f"archive {served!r}: unknown setting(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(SETTINGS_KEYS))}")
    model = settings.get("model", served)
    if not known_model(model, models_dir):
        raise ValueError(f"archive {served!r}: unknown model {model!r}; known: {', '.join(sorted(MODELS))}, "
                         "or a model file imported into the models dir")
    if not served or not served.replace("-", "_").replace(".", "_").isidentifier():
        raise ValueError(f"bad served model name {served!r}")
    sleep_s = float(settings.get("sleep_s", 0.0))
    if sleep_s < 0:
        raise ValueError(f"archive {served!r}: sleep_s must be >= 0")
    return {"model": model, "sleep_s": sleep_s}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _archiver_version() -> str:
    return version("torch-model-archiver")


def _model_file(model: str, models_dir: Path | None) -> tuple[Path, str, Path | None]:
    """``(file, backend, manifest)`` of ``model``: a built-in model's TorchScript export (exported
    here when missing; no manifest: the handler knows its spec), or an imported model file with the
    backend of its format and its manifest (the handler's spec)."""
    art = model_paths(model, models_dir)
    if model not in MODELS and art.is_file_model():
        manifest = art.manifest
        fmt = manifest["source"]["format"]
        if fmt not in FILE_BACKENDS:
            raise ValueError(f"model {model!r}: a {fmt} model file cannot be served by TorchServe; "
                             f"formats it serves: {', '.join(FILE_BACKENDS)}")
        return art.model_dir / manifest["files"][fmt]["path"], FILE_BACKENDS[fmt], art.manifest_path
    return export_torchscript(model, models_dir), "torchscript", None


def build_archive(served: str, settings: Mapping[str, Any] | None, store: Path,
                  models_dir: Path | None = None, force: bool = False) -> Path:
    """Build (or reuse) ``<store>/<served>.mar``; returns its path."""
    spec = normalize_spec(served, settings, models_dir)
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    model_file, backend, manifest = _model_file(spec["model"], models_dir)
    mar, stamp_file = store / f"{served}.mar", store / f"{served}.mar.json"
    handler_settings = {"model": spec["model"], "served_name": served, "backend": backend,
                        "file": model_file.name, "manifest": manifest.name if manifest else None,
                        "sleep_s": spec["sleep_s"]}
    stamp = {"build_version": BUILD_VERSION, "archiver": _archiver_version(),
             "model_file_sha256": _sha256(model_file), "handler_sha256": _sha256(HANDLER),
             "manifest_sha256": _sha256(manifest) if manifest else None,
             "wire_sha256": _sha256(WIRE), "settings": handler_settings}
    with open(store / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and mar.is_file() and stamp_file.is_file():
            try:
                old = json.loads(stamp_file.read_text())
                if {k: old.get(k) for k in stamp} == stamp and old.get("mar_bytes") == mar.stat().st_size:
                    return mar
            except (OSError, ValueError):
                pass
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f".{served}-", dir=store) as tmp:
            tmp_dir = Path(tmp)
            settings_file = tmp_dir / "crayfish.json"
            settings_file.write_text(json.dumps(handler_settings, indent=2) + "\n")
            out_dir = tmp_dir / "out"
            out_dir.mkdir()
            archiver = shutil.which("torch-model-archiver", path=str(Path(sys.executable).parent)) \
                or "torch-model-archiver"
            extra = [str(settings_file)]
            if manifest is not None:
                extra.append(str(shutil.copyfile(manifest, tmp_dir / manifest.name)))
            cmd = [archiver, "--model-name", served, "--version", ARCHIVE_VERSION,
                   "--serialized-file", str(model_file), "--handler", str(HANDLER),
                   "--extra-files", ",".join(extra), "--export-path", str(out_dir)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            built = out_dir / f"{served}.mar"
            if proc.returncode != 0 or not built.is_file():
                raise RuntimeError(f"torch-model-archiver failed ({proc.returncode}) for {served}:\n"
                                   f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            os.replace(built, mar)
        stamp.update(mar_bytes=mar.stat().st_size, built_seconds=round(time.perf_counter() - t0, 3),
                     built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        tmp_stamp = stamp_file.with_name(f".{stamp_file.name}.{os.getpid()}.tmp")
        tmp_stamp.write_text(json.dumps(stamp, indent=2) + "\n")
        os.replace(tmp_stamp, stamp_file)
    return mar


def build_archives(archives: Mapping[str, Mapping[str, Any] | None], store: Path,
                   models_dir: Path | None = None, force: bool = False) -> dict[str, Path]:
    return {served: build_archive(served, settings, store, models_dir, force)
            for served, settings in archives.items()}


def _parse_archive(text: str) -> tuple[str, dict]:
    name, _, settings = text.partition("=")
    return name.strip(), (json.loads(settings) if settings.strip() else {})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.torchserve.build", description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, required=True, help="the TorchServe model store")
    ap.add_argument("--models-dir", type=Path, default=None, help="models dir (default .cache/models)")
    ap.add_argument("--archive", action="append", required=True, type=_parse_archive,
                    help="NAME or NAME=JSON settings ({\"model\": ..., \"sleep_s\": ...}); repeatable")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--json", action="store_true", help="print {served: mar path} as JSON")
    args = ap.parse_args(argv)
    out = build_archives(dict(args.archive), args.store, args.models_dir, args.force)
    if args.json:
        print(json.dumps({k: str(v) for k, v in out.items()}))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
