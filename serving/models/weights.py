"""Canonical weights files: a plain ``.npz`` written byte-for-byte reproducibly.

``np.savez`` stamps the current time into every zip entry, so two builds with the same seed would
hash differently. :func:`save_npz` writes the same archive layout (uncompressed, ``.npy`` members,
readable by ``np.load``) with a fixed timestamp and sorted member order, so the sha256 in a
manifest doubles as a fingerprint of (model, seed, builder version) across machines.

Layout conventions (every later exporter -- TorchScript, SavedModel, ... -- must follow them):

- dense kernels ``<layer>.w``: ``[in, out]`` (``y = x @ w + b``; Keras layout, transpose for
  ``torch.nn.Linear``),
- conv kernels ``<layer>.w``: ``[out, in, kh, kw]`` (OIHW; ONNX/PyTorch layout, transpose to
  ``[kh, kw, in, out]`` for TensorFlow),
- biases ``<layer>.b``: ``[out]``; every array is little-endian float32.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (tmp file + rename) and reproducibly."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key in sorted(arrays):
                arr = np.ascontiguousarray(arrays[key], dtype="<f4")
                buf = io.BytesIO()
                np.lib.format.write_array(buf, arr, allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_DATE)
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """Every array of a weights ``.npz`` as float32 (fully read; the file is closed on return)."""
    with np.load(Path(path), allow_pickle=False) as z:
        return {k: np.asarray(z[k], dtype=np.float32) for k in z.files}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def param_count(weights: Mapping[str, np.ndarray]) -> int:
    return int(sum(int(np.prod(a.shape)) for a in weights.values()))
