"""TorchServe custom handler: raw tensors in, the model, raw tensors out.

:mod:`serving.torchserve.build` copies this file into every model archive (``.mar``) as its
handler, with a ``crayfish.json`` next to the model file::

    {"model": "ffnn", "served_name": "ffnn-hung", "backend": "torchscript",
     "file": "ffnn.torchscript.pt", "manifest": null, "sleep_s": 5.0}

A model file of one's own (serving.models.files: imported into the models dir with its
``manifest.json``) travels with its manifest (``"manifest": "manifest.json"``, the
:class:`ModelSpec` it describes) and its file as imported: ``<name>.torchscript.pt`` (backend
``torchscript``) or ``<name>.onnx`` (backend ``onnxruntime``: ONNX Runtime, in TorchServe's worker).

TorchServe's Python worker imports it as module ``handler`` and calls the function entry point
:func:`handle` -- once with ``data=None`` to initialise, then once per (server-side) batch of
requests. The model runs through the embedded backend
(:class:`serving.embedded.torchscript_backend.TorchScriptScorer` or
:class:`serving.embedded.onnxruntime_backend.OnnxRuntimeScorer`, so TorchServe and the embedded
path execute the same code), created once per worker process with the options of the launcher,
passed in the worker's environment (TorchServe hands its own environment to its workers):

``CRAYFISH_TS_THREADS`` (default 1), ``CRAYFISH_TS_INTEROP_THREADS`` (1),
``CRAYFISH_TS_DEVICE`` (``cpu`` | ``cuda``; with cuda, the GPU TorchServe assigned the worker;
ONNX needs onnxruntime-gpu for it, which the torch environment does not have),
``CRAYFISH_TS_OPTIMIZE`` (``freeze``; TorchScript only), ``CRAYFISH_TS_WARMUP`` (1: score a zero
batch 3x at load).

Tensors: :mod:`serving.torchserve.wire`. A single tensor (``data`` + ``shape`` [+ ``dtype``]) is the
hot path of the built-in models; a named request (``tensors`` + ``data.<i>``: the named-tensor
contract of serving.models.spec) is checked with :func:`serving.models.spec.check_feeds` and
answered by name (``CFN1``), as is a model with several outputs or an output that is not float32.

Errors: an undecodable or wrongly shaped request raises TorchServe's
``PredictionException(message, 400)`` (gRPC INVALID_ARGUMENT); inside a server-side batch of
several requests, the bad ones get a ``CFE1`` error frame instead and the others are scored
(TorchServe has no per-request status in a batch).

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

from serving.embedded.base import ScoringError
from serving.embedded.onnxruntime_backend import OnnxRuntimeScorer
from serving.embedded.torchscript_backend import TorchScriptScorer
from serving.models.build import ModelArtifacts
from serving.models.spec import FeedError, ModelSpec, check_feeds, get_spec
from serving.torchserve import wire

logger = logging.getLogger(__name__)
SETTINGS_FILE = "crayfish.json"

_handler = None


class _Handler:
    def __init__(self, context):
        props = context.system_properties
        model_dir = Path(props.get("model_dir") or ".")
        settings = json.loads((model_dir / SETTINGS_FILE).read_text())
        manifest = settings.get("manifest")
        self.spec: ModelSpec = ModelSpec.from_manifest(json.loads((model_dir / manifest).read_text())) \
            if manifest else get_spec(settings["model"])
        self.sleep_s = float(settings.get("sleep_s", 0.0))
        device = os.environ.get("CRAYFISH_TS_DEVICE", "cpu")
        if device == "cuda":
            gpu = props.get("gpu_id")
            if gpu is not None and torch.cuda.is_available():
                torch.cuda.set_device(int(gpu))
        name = self.spec.name
        backend = settings.get("backend", "torchscript")
        path = model_dir / settings["file"]
        artifacts = ModelArtifacts(name=name, model_dir=model_dir, weights=model_dir / f"{name}.npz",
                                   onnx=path if backend == "onnxruntime" else model_dir / f"{name}.onnx",
                                   manifest_path=model_dir / "manifest.json")
        threads = int(os.environ.get("CRAYFISH_TS_THREADS", "1"))
        interop = int(os.environ.get("CRAYFISH_TS_INTEROP_THREADS", "1"))
        if backend == "onnxruntime":
            self.scorer = OnnxRuntimeScorer(self.spec, artifacts, intra_op_threads=threads,
                                            inter_op_threads=interop, device=device)
        elif backend == "torchscript":
            self.scorer = TorchScriptScorer(
                self.spec, artifacts, path=str(path), device=device, threads=threads, interop_threads=interop,
                optimize=os.environ.get("CRAYFISH_TS_OPTIMIZE", "freeze"))
        else:
            raise ValueError(f"crayfish handler: unknown backend {backend!r} in {SETTINGS_FILE}")
        if os.environ.get("CRAYFISH_TS_WARMUP", "1") == "1" and self.sleep_s <= 0:
            self.scorer.warmup(batch_size=1)
        first = self.spec.inputs[0]
        self.multi_input = self.spec.multi_input
        self.item_shape = tuple(first.shape)
        self.input_dtype = np.dtype(first.dtype)
        self.expected = f"{first.dtype} [b>=1, {', '.join(map(str, self.item_shape))}]"
        # who answers, named in every answer frame: the TorchServe this worker runs in
        self.server = f"torchserve {ts_version}"
        logger.info("crayfish handler ready: %s", json.dumps(self.scorer.describe()))
        if os.environ.get("CRAYFISH_TS_QUIET", "0") == "1":
            # TorchServe's worker logs (INFO) a line per request to stdout, which the frontend
            # reads and logs again; keep warnings and errors only.
            logging.getLogger().setLevel(logging.WARNING)

    def _decode(self, request: dict):
        """``(feeds, named)``: what the scorer takes (an array for a model of one input, else a
        ``{name: array}`` dict) and whether the request was named; :class:`wire.WireError`."""
        if wire.is_named_request(request):
            try:
                return check_feeds(self.spec, wire.decode_named_request(request)), True
            except FeedError as exc:
                raise wire.WireError(str(exc)) from None
        x = wire.decode_request(request)
        if self.multi_input:
            raise wire.WireError(f"{self.spec.name}: takes named inputs "
                                 f"{', '.join(t.name for t in self.spec.inputs)}, got one unnamed tensor")
        if x.dtype != self.input_dtype or x.ndim < 1 or x.shape[1:] != self.item_shape or x.shape[0] < 1:
            raise wire.WireError(f"{self.spec.name}: expected {self.expected}, got {x.dtype} {list(x.shape)}")
        return x, False

    def _encode(self, y, named: bool, ns: int) -> bytes:
        if isinstance(y, dict):
            return wire.encode_named_response(y, ns, self.server)
        if named or y.dtype != np.float32:   # by name (the client unwraps one for an unnamed request)
            return wire.encode_named_response({self.spec.output_name: y}, ns, self.server)
        return wire.encode_response(y, ns, self.server)

    def _score(self, x):
        t0 = time.perf_counter_ns()
        try:
            y = self.scorer.score(x)
        except ScoringError as exc:
            raise wire.WireError(str(exc)) from None
        return y, time.perf_counter_ns() - t0

    def metadata(self) -> bytes:
        """The answer to TorchServe's customized describe (management DescribeModel)."""
        spec = self.spec

        def tensors(ts):
            return [{"name": t.name, "dtype": t.dtype, "shape": [-1, *t.shape]} for t in ts]

        return json.dumps({
            "inputs": tensors(spec.inputs), "outputs": tensors(spec.outputs), "named": spec.named,
            "model": spec.name, "sleep_s": self.sleep_s, "scorer": self.scorer.describe(),
            "wire": "serving.torchserve.wire (raw little-endian tensors; one unnamed tensor travels "
                    f"as {wire.DATA_KEY!r}, named ones as {wire.TENSORS_KEY!r} + {wire.DATA_KEY}.<i>)",
        }).encode()

    def handle(self, data: list, context) -> list:
        if context is not None and context.get_request_header(0, "describe") == "True":
            return [self.metadata()]
        if self.sleep_s > 0:
            time.sleep(self.sleep_s)
        if len(data) == 1:  # the usual case (batch_size 1): errors as real gRPC statuses
            try:
                x, named = self._decode(data[0])
                y, ns = self._score(x)
            except wire.WireError as exc:
                raise PredictionException(str(exc), 400) from None
            return [self._encode(y, named, ns)]
        return self._handle_batch(data)

    def _handle_batch(self, data: list) -> list:
        """A server-side batch: the good requests scored in one call (concatenated on the batch
        axis, input by input), the bad ones answered with an error frame."""
        decoded: list[tuple[object, bool, int] | None] = []
        out: list[bytes | None] = [None] * len(data)
        for i, request in enumerate(data):
            try:
                x, named = self._decode(request)
                rows = next(iter(x.values())).shape[0] if isinstance(x, dict) else x.shape[0]
                decoded.append((x, named, rows))
            except wire.WireError as exc:
                decoded.append(None)
                out[i] = wire.encode_error(400, str(exc))
        good = [d[0] for d in decoded if d is not None]
        if not good:
            return out
        if len(good) == 1:
            x = good[0]
        elif isinstance(good[0], dict):
            x = {name: np.concatenate([g[name] for g in good]) for name in good[0]}
        else:
            x = np.concatenate(good)
        try:
            y, ns = self._score(x)
        except wire.WireError as exc:
            return [o if o is not None else wire.encode_error(400, str(exc)) for o in out]
        pos = 0
        for i, d in enumerate(decoded):
            if d is not None:
                _, named, rows = d
                part = {k: v[pos:pos + rows] for k, v in y.items()} if isinstance(y, dict) else y[pos:pos + rows]
                out[i] = self._encode(part, named, ns)
                pos += rows
        return out


def handle(data, context):
    """TorchServe's function entry point (``data`` is None for the initialising call)."""
    global _handler
    if _handler is None:
        _handler = _Handler(context)
    if data is None:
        return None
    return _handler.handle(data, context)
