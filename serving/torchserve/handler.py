"""TorchServe custom handler: raw float32 tensors in, the TorchScript model, raw float32 out.

:mod:`serving.torchserve.build` copies this file into every model archive (``.mar``) as its
handler, with a ``crayfish.json`` next to the serialized ``<name>.torchscript.pt``::

    {"model": "ffnn", "served_name": "ffnn-hung", "torchscript": "ffnn.torchscript.pt", "sleep_s": 5.0}

TorchServe's Python worker imports it as module ``handler`` and calls the function entry point
:func:`handle` -- once with ``data=None`` to initialise, then once per (server-side) batch of
requests. The model runs through the embedded ``torchscript`` backend
(:class:`serving.embedded.torchscript_backend.TorchScriptScorer`, so TorchServe and the embedded
path execute the same code), created once per worker process with the options of the launcher,
passed in the worker's environment (TorchServe hands its own environment to its workers):

``CRAYFISH_TS_THREADS`` (default 1), ``CRAYFISH_TS_INTEROP_THREADS`` (1),
``CRAYFISH_TS_DEVICE`` (``cpu`` | ``cuda``; with cuda, the GPU TorchServe assigned the worker),
``CRAYFISH_TS_OPTIMIZE`` (``freeze``), ``CRAYFISH_TS_WARMUP`` (1: score a zero batch 3x at load).

Wire format: :mod:`serving.torchserve.wire`. Errors: an undecodable or wrongly shaped request
raises TorchServe's ``PredictionException(message, 400)`` (gRPC INVALID_ARGUMENT); inside a
server-side batch of several requests, the bad ones get a ``CFE1`` error frame instead and the
others are scored (TorchServe has no per-request status in a batch).

``sleep_s`` > 0 makes a deliberately hung model (``ffnn-hung``: 5 s per call) for deadline tests.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch  # torch, ts: this module runs only in TorchServe's worker (the torch environment)
from ts.utils.util import PredictionException
from ts.version import __version__ as ts_version

from serving.embedded.torchscript_backend import TorchScriptScorer
from serving.models.build import ModelArtifacts
from serving.models.spec import get_spec
from serving.torchserve import wire

logger = logging.getLogger(__name__)
SETTINGS_FILE = "crayfish.json"

_handler = None


class _Handler:
    def __init__(self, context):
        props = context.system_properties
        model_dir = Path(props.get("model_dir") or ".")
        settings = json.loads((model_dir / SETTINGS_FILE).read_text())
        self.spec = get_spec(settings["model"])
        self.sleep_s = float(settings.get("sleep_s", 0.0))
        device = os.environ.get("CRAYFISH_TS_DEVICE", "cpu")
        if device == "cuda":
            gpu = props.get("gpu_id")
            if gpu is not None and torch.cuda.is_available():
                torch.cuda.set_device(int(gpu))
        name = self.spec.name
        artifacts = ModelArtifacts(name=name, model_dir=model_dir, weights=model_dir / f"{name}.npz",
                                   onnx=model_dir / f"{name}.onnx", manifest_path=model_dir / "manifest.json")
        self.scorer = TorchScriptScorer(
            self.spec, artifacts, path=str(model_dir / settings["torchscript"]), device=device,
            threads=int(os.environ.get("CRAYFISH_TS_THREADS", "1")),
            interop_threads=int(os.environ.get("CRAYFISH_TS_INTEROP_THREADS", "1")),
            optimize=os.environ.get("CRAYFISH_TS_OPTIMIZE", "freeze"))
        if os.environ.get("CRAYFISH_TS_WARMUP", "1") == "1" and self.sleep_s <= 0:
            self.scorer.warmup(batch_size=1)
        self.item_shape = tuple(self.spec.input_shape)
        # who answers, named in every answer frame: the TorchServe this worker runs in
        self.server = f"torchserve {ts_version}"
        logger.info("crayfish handler ready: %s", json.dumps(self.scorer.describe()))
        if os.environ.get("CRAYFISH_TS_QUIET", "0") == "1":
            # TorchServe's worker logs (INFO) a line per request to stdout, which the frontend
            # reads and logs again; keep warnings and errors only.
            logging.getLogger().setLevel(logging.WARNING)

    def _decode(self, request: dict) -> np.ndarray:
        x = wire.decode_request(request)
        if x.ndim < 1 or x.shape[1:] != self.item_shape or x.shape[0] < 1:
            raise wire.WireError(f"{self.spec.name}: expected float32 [b>=1, "
                                 f"{', '.join(map(str, self.item_shape))}], got float32 {list(x.shape)}")
        return x

    def metadata(self) -> bytes:
        """The answer to TorchServe's customized describe (management DescribeModel)."""
        spec = self.spec
        return json.dumps({
            "inputs": [{"name": wire.DATA_KEY, "dtype": "float32", "shape": [-1, *spec.input_shape]}],
            "outputs": [{"name": spec.output_name, "dtype": "float32", "shape": [-1, *spec.output_shape]}],
            "model": spec.name, "sleep_s": self.sleep_s, "scorer": self.scorer.describe(),
            "wire": "serving.torchserve.wire (raw little-endian float32)",
        }).encode()

    def handle(self, data: list, context) -> list:
        if context is not None and context.get_request_header(0, "describe") == "True":
            return [self.metadata()]
        if self.sleep_s > 0:
            time.sleep(self.sleep_s)
        if len(data) == 1:  # the usual case (batch_size 1): errors as real gRPC statuses
            try:
                x = self._decode(data[0])
            except wire.WireError as exc:
                raise PredictionException(str(exc), 400) from None
            t0 = time.perf_counter_ns()
            y = self.scorer.score(x)
            return [wire.encode_response(y, time.perf_counter_ns() - t0, self.server)]
        xs: list[np.ndarray | None] = []
        out: list[bytes | None] = [None] * len(data)
        for i, request in enumerate(data):
            try:
                xs.append(self._decode(request))
            except wire.WireError as exc:
                xs.append(None)
                out[i] = wire.encode_error(400, str(exc))
        good = [x for x in xs if x is not None]
        if good:
            t0 = time.perf_counter_ns()
            y = self.scorer.score(np.concatenate(good) if len(good) > 1 else good[0])
            ns = time.perf_counter_ns() - t0
            pos = 0
            for i, x in enumerate(xs):
                if x is not None:
                    out[i] = wire.encode_response(y[pos:pos + x.shape[0]], ns, self.server)
                    pos += x.shape[0]
        return out


def handle(data, context):
    """TorchServe's function entry point (``data`` is None for the initialising call)."""
    global _handler
    if _handler is None:
        _handler = _Handler(context)
    if data is None:
        return None
    return _handler.handle(data, context)
