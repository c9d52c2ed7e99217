"""Client of TorchServe's gRPC inference API (client kind ``torchserve``; server: serving/torchserve).

Calls ``org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions`` with the tensor in
``PredictionsRequest.input`` as raw little-endian float32 (:mod:`serving.torchserve.wire`; our
handler in the model archive decodes it). ``score({input name: array})`` (the named-tensor contract,
serving.models.spec) sends every input by name in its own dtype and returns ``{output name:
array}``; so does an unnamed request to a model with several outputs. The gRPC stubs are generated from the protos inside the
installed TorchServe jar into ``.cache/torchserve/grpc`` on first use
(:mod:`serving.torchserve.grpc_stubs`; needs the ``torch`` environment built, not installed here).

Options (``create_client("torchserve", target, model, **options)``):

``key_file``
    TorchServe's ``key_file.json`` (token authorization is on by default since 0.11): the client
    sends ``authorization: Bearer <inference key>`` on inference calls and the management key on
    management calls. Default: the key file of the server the launcher started at ``target``
    (found through ``.cache/torchserve/servers/<host>_<port>.json``, which
    :mod:`serving.torchserve.launcher` writes); none found -> no token (a server started with
    ``auth="off"``).
``management_target``
    ``host:port`` of TorchServe's gRPC management API (health, describe). Default: from the same
    server file; none -> health falls back to the inference API's ``Ping`` and describe to the
    model's spec in :data:`serving.models.MODELS`.

Errors map to :mod:`serving.errors`. TorchServe reports some failures as ``INTERNAL`` with a
message, which is mapped by message: ``Model not found`` -> ModelNotFoundError, ``has no worker
to serve`` (job queue full, or no worker) -> OverloadedError; ``UNAVAILABLE "Prediction
failed"`` (the handler raised) -> BackendError; the rest through
:func:`serving.errors.error_from_status` (INVALID_ARGUMENT -> BadInputError, DEADLINE_EXCEEDED ->
DeadlineExceededError, ...).

``score_stream`` pipelines unary calls (up to 32 in flight, results in order): TorchServe's
bidirectional ``StreamPredictions2`` is its sequence-batching API for stateful models, not a
plain stream of independent requests.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import time
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import empty_pb2

from crayfish.host.paths import cache_dir
from serving.clients.base import ClientResult, ExternalClient
from serving.errors import (
    BackendError,
    BadInputError,
    ModelNotFoundError,
    OverloadedError,
    UnavailableError,
    error_from_status,
)
from serving.models import MODELS
from serving.torchserve import grpc_stubs, wire

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
STREAM_WINDOW = 32


def servers_dir() -> Path:
    """Where the launcher records each running server (``<host>_<port>.json``)."""
    env = os.environ.get("CRAYFISH_TORCHSERVE_SERVERS_DIR")
    return Path(env) if env else cache_dir("torchserve", "servers")


def server_info(target: str) -> dict | None:
    """What the launcher recorded about the server at ``target`` (None when unknown)."""
    path = servers_dir() / (target.replace(":", "_").replace("/", "_") + ".json")
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)  # a record left by a server that died is ignored
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


def read_keys(key_file: str | os.PathLike) -> dict[str, str]:
    """``{"inference": ..., "management": ...}`` from TorchServe's key_file.json."""
    data = json.loads(Path(key_file).read_text())
    return {kind: data[kind]["key"] for kind in ("inference", "management") if kind in data}


def _map_error(exc: grpc.RpcError):
    code, details = exc.code(), exc.details() or ""
    # TorchServe appends the Java exception class on a line of its own ("...\norg.pytorch.serve.
    # http.InternalServerException"): keep it out of the message, but still match on it.
    message = "\n".join(line for line in details.splitlines() if not line.startswith("org.pytorch.serve.")) \
        or details
    name = getattr(code, "name", str(code))
    if name in ("INTERNAL", "NOT_FOUND") and ("Model not found" in details or "ModelNotFoundException" in details
                                              or "ModelVersionNotFoundException" in details):
        return ModelNotFoundError(message)
    if name == "INTERNAL" and "has no worker to serve" in details:
        return OverloadedError(message)
    if name == "UNAVAILABLE" and details.startswith("Prediction failed"):
        return BackendError(f"TorchServe handler failed: {message}")
    return error_from_status(code, message)


class TorchServeClient(ExternalClient):
    kind = "torchserve"
    server = "torchserve"

    def __init__(self, target: str, model: str, timeout_s: float = 5.0, max_in_flight: int = 1,
                 key_file: str | None = None, management_target: str | None = None, **options):
        super().__init__(target, model, timeout_s=timeout_s, max_in_flight=max_in_flight, **options)
        self._pb = grpc_stubs.load()
        info = server_info(target) or {}
        self.key_file = key_file or info.get("key_file")
        self.management_target = management_target or info.get("management_target")
        self._keys = self._load_keys()
        opts = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        self._channel = grpc.insecure_channel(target, options=opts)
        self._stub = self._pb.inference_pb2_grpc.InferenceAPIsServiceStub(self._channel)
        self._mgmt_channel = grpc.insecure_channel(self.management_target, options=opts) \
            if self.management_target else None
        self._mgmt = self._pb.management_pb2_grpc.ManagementAPIsServiceStub(self._mgmt_channel) \
            if self._mgmt_channel is not None else None
        self._metadata = self._auth("inference")
        self._Request = self._pb.inference_pb2.PredictionsRequest

    def _load_keys(self) -> dict[str, str]:
        if not self.key_file:
            return {}
        try:
            return read_keys(self.key_file)
        except (OSError, ValueError, KeyError) as exc:
            raise UnavailableError(f"torchserve client: cannot read key file {self.key_file}: {exc}") from None

    def _auth(self, kind: str) -> tuple | None:
        key = self._keys.get(kind)
        return (("authorization", f"Bearer {key}"),) if key else None

    def _request(self, x):
        if isinstance(x, dict):     # named tensors: every input by name, in its own dtype
            try:
                return self._Request(model_name=self.model, input=wire.encode_named_request(x))
            except wire.WireError as exc:
                raise BadInputError(f"model {self.model!r}: {exc}") from None
        return self._Request(model_name=self.model, input=wire.encode_request(x))

    def _result(self, resp, named: bool = False) -> ClientResult:
        try:
            out, inference_ns, server = wire.decode_response(resp.prediction)
        except wire.RemoteError as exc:
            raise (BadInputError if exc.code == 400 else BackendError)(str(exc)) from None
        except wire.WireError as exc:
            raise BackendError(f"torchserve: {exc}") from None
        if not named and isinstance(out, dict) and len(out) == 1:
            out = next(iter(out.values()))     # one output (not float32) to an unnamed request
        # who answered, as the handler inside TorchServe names it ("torchserve 0.12.0"); a
        # handler that names nobody leaves the bare kind, never a version taken on trust
        return ClientResult(output=out, server_inference_ns=inference_ns, server=server or self.server)

    def score(self, x: np.ndarray, traceparent: str | None = None) -> ClientResult:
        try:
            resp = self._stub.Predictions(self._request(x), timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _map_error(exc) from None
        return self._result(resp, isinstance(x, dict))

    def score_async(self, x: np.ndarray, traceparent: str | None = None) -> cf.Future:
        """Native gRPC future, adapted to a concurrent.futures.Future of ClientResult."""
        out: cf.Future = cf.Future()
        named = isinstance(x, dict)
        call = self._stub.Predictions.future(self._request(x), timeout=self.timeout_s, metadata=self._metadata)

        def done(c):
            try:
                out.set_result(self._result(c.result(), named))
            except grpc.RpcError as exc:
                out.set_exception(_map_error(exc))
            except Exception as exc:  # noqa: BLE001 - delivered to the caller
                out.set_exception(exc)

        call.add_done_callback(done)
        return out

    def score_stream(self, xs: list[np.ndarray]) -> list[ClientResult]:
        """Pipelined unary calls, at most ``max(max_in_flight, STREAM_WINDOW)`` in flight (so a
        long list does not overflow TorchServe's job queue); results in input order."""
        window = max(self.max_in_flight, STREAM_WINDOW)
        futures: list[cf.Future] = []
        for i, x in enumerate(xs):
            if i >= window:
                futures[i - window].exception()  # wait for a slot (errors are raised below)
            futures.append(self.score_async(x))
        return [f.result() for f in futures]

    # -- health / metadata --------------------------------------------------------------------
    def _describe_model(self, customized: bool, timeout_s: float | None = None) -> list[dict]:
        req = self._pb.management_pb2.DescribeModelRequest(model_name=self.model, customized=customized)
        try:
            resp = self._mgmt.DescribeModel(req, timeout=timeout_s or self.timeout_s,
                                            metadata=self._auth("management"))
        except grpc.RpcError as exc:
            raise _map_error(exc) from None
        return json.loads(resp.msg)

    def health(self) -> bool:
        """With the management API: the model is registered and has a READY worker. Without it:
        TorchServe's ``Ping`` says Healthy."""
        if self._mgmt is None:
            resp = self._stub.Ping(_empty(), timeout=self.timeout_s, metadata=self._metadata)
            return json.loads(resp.health).get("status") == "Healthy"
        try:
            desc = self._describe_model(customized=False)
        except ModelNotFoundError:
            return False
        return any(w.get("status") == "READY" for d in desc for w in d.get("workers", []))

    def describe(self) -> dict:
        """The tensors as our handler reports them through TorchServe's management API
        (``DescribeModel`` with ``customized=true`` runs the handler's describe branch in a
        worker); TorchServe itself has no tensor-metadata API. Without the management API:
        the model's spec from :data:`serving.models.MODELS`."""
        if self._mgmt is None:
            spec = MODELS.get(self.model)
            if spec is None:
                raise BackendError(f"torchserve: no management API known for {self.target} to describe "
                                   f"{self.model!r}, and it is not a built-in model")
            return {"inputs": [{"name": t.name, "dtype": t.dtype, "shape": [-1, *t.shape]} for t in spec.inputs],
                    "outputs": [{"name": t.name, "dtype": t.dtype, "shape": [-1, *t.shape]} for t in spec.outputs],
                    "source": "serving.models.MODELS"}
        desc = self._describe_model(customized=True)
        meta = desc[0].get("customizedMetadata") if desc else None
        if not meta:
            raise BackendError(f"torchserve: model {self.model!r} returned no metadata")
        out = json.loads(meta) if isinstance(meta, str) else meta
        out["source"] = "torchserve management API (handler describe)"
        return out

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            try:
                if self.health():
                    return
                last = "no READY worker"
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"torchserve at {self.target} not ready for {self.model!r} after {timeout_s:.0f}s ({last})")

    def close(self) -> None:
        super().close()
        self._channel.close()
        if self._mgmt_channel is not None:
            self._mgmt_channel.close()


def _empty():
    return empty_pb2.Empty()


CLIENTS = (TorchServeClient,)
