"""Client kind ``tf-serving``: TensorFlow Serving's gRPC ``PredictionService.Predict``.

Where it runs: it needs the TF Serving stubs (``tensorflow_serving.apis``, which import
TensorFlow's ``tensorflow.core.framework`` protos), so **a worker using this client runs in the
``tensorflow`` environment** (``ServerSpec(worker_env="tensorflow")`` in
:mod:`serving.tfserving`; importing the stubs there imports TensorFlow, a few seconds at client
creation). An environment without TensorFlow can get the stubs from ``tensorflow-protobuf`` instead
(see :mod:`serving.tfserving.wire`). This module itself imports anywhere (the stubs load in
``__init__``), so ``create_client`` can list the kind in every environment.

Per call (TF Serving's wire format, as the original Crayfish used it):

- ``PredictRequest``: ``model_spec.name`` = the model, ``model_spec.signature_name`` =
  ``signature_name`` (default ``serving_default``), ``model_spec.version`` only if
  ``model_version`` is given; ``inputs[input_key]`` (default ``input_1``) a ``DT_FLOAT``
  TensorProto with the batch's raw little-endian bytes in ``tensor_content`` (not ``float_val``
  lists); ``output_filter`` = ``[output_key]``.
- The answer's ``outputs[output_key]`` (default ``output``) -> float32 ndarray.
- Named tensors (serving.models.spec): ``score({"features": f32, "mask": i64})`` puts every
  input in ``inputs[name]`` with its own DataType (DT_FLOAT, DT_INT64, DT_BOOL, ...; raw
  ``tensor_content``), sets no ``output_filter``, and returns ``{output name: array}`` of every
  output the answer holds, each in its dtype. A model of one input may be sent by name too (the
  answer then comes back by name). ``output_key=None``: unnamed requests set no filter either and
  get the only output as an array, or every output by name when the signature has several.
- Which server answered: our servicer (:mod:`serving.tfserving`) sets gRPC trailing metadata
  ``crayfish-server: crayfish-scoring (tf-serving protocol)`` plus ``crayfish-inference-ns`` /
  ``crayfish-queue-ns``; real TF Serving sets none, so ``ClientResult.server`` is then
  ``"tf-serving"`` and the server timings are 0 (TF Serving does not report them).

Errors are :mod:`serving.errors` exceptions via :func:`serving.errors.error_from_status`:
INVALID_ARGUMENT (bad shape / key / dtype) -> BadInputError, NOT_FOUND (unknown model or
version) -> ModelNotFoundError, the call's ``timeout_s`` passing -> DeadlineExceededError,
RESOURCE_EXHAUSTED -> OverloadedError, UNAVAILABLE -> UnavailableError, INTERNAL ->
BackendError. A non-float32 unnamed input is refused locally (BadInputError): the single-tensor
path sends DT_FLOAT only (named inputs go in their own dtypes; the server checks them).

``health()``: ``ModelService.GetModelStatus`` -- True when a version of the model is
``AVAILABLE`` (TF Serving's own readiness probe; TF Serving has no ``grpc.health.v1``); with
stubs that lack ModelService (tensorflow-protobuf), a successful ``GetModelMetadata``.
``describe()``: ``GetModelMetadata`` (``signature_def``) of the signature. ``score_async``:
native gRPC futures (``max_in_flight`` is not a cap here: every call goes out at once, gRPC
multiplexes them on one HTTP/2 connection). ``score_stream``: TF Serving has no streaming
Predict, so it pipelines unary calls (results in input order).

Options: ``signature_name``, ``input_key``, ``output_key`` (None: no output filter, see above),
``model_version`` (int or None),
``root_cert_file`` (TLS), ``max_message_bytes`` (default 256 MiB: a ResNet50 batch of 64 is
~38 MB; gRPC's default is 4 MB).
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

import grpc
import numpy as np

from serving.clients.base import ClientResult, ExternalClient, grpc_channel
from serving.errors import (
    BadInputError,
    ModelNotFoundError,
    ServingError,
    error_from_status,
)
from serving.tfserving import wire

_F32 = np.dtype(np.float32)


def _metadata(md) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in md or ():
        out[item[0]] = item[1]
    return out


class TFServingClient(ExternalClient):
    kind = "tf-serving"
    server = "tf-serving"

    def __init__(self, target: str, model: str, timeout_s: float = 5.0, max_in_flight: int = 1,
                 signature_name: str = "serving_default", input_key: str = "input_1",
                 output_key: str | None = "output", model_version: int | None = None,
                 root_cert_file: str | None = None, max_message_bytes: int = 256 * 1024 * 1024,
                 **options: Any):
        super().__init__(target, model, timeout_s=timeout_s, max_in_flight=max_in_flight, **options)
        pb = wire.protos()
        self._grpc = grpc
        self._wire = wire
        self._pb = pb
        self.signature_name = signature_name
        self.input_key = input_key
        self.output_key = output_key
        self.model_version = model_version
        self._channel = grpc_channel(target, max_message_bytes, root_cert_file)
        self._predict = pb.prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = (pb.model_service_pb2_grpc.ModelServiceStub(self._channel)
                        if pb.model_service_pb2_grpc is not None else None)
        # the request templates: everything but the tensors, copied per call. A single tensor
        # asks for ``output_key`` (output_filter); a named request for every output (no filter).
        self._named_template = pb.predict_pb2.PredictRequest()
        self._fill_spec(self._named_template.model_spec, signature=True)
        self._template = pb.predict_pb2.PredictRequest()
        self._template.CopyFrom(self._named_template)
        if output_key:
            self._template.output_filter.append(output_key)

    def _fill_spec(self, spec: Any, signature: bool) -> None:
        spec.name = self.model
        if signature and self.signature_name:
            spec.signature_name = self.signature_name
        if self.model_version is not None:
            spec.version.value = int(self.model_version)

    # -- scoring -------------------------------------------------------------------------------
    def _request(self, x: np.ndarray):
        if isinstance(x, dict):
            return self._named_request(x)
        try:
            dt = x.dtype
        except AttributeError:
            raise BadInputError(f"tf-serving client: expected a float32 ndarray, got {type(x).__name__}") from None
        if dt != _F32:
            raise BadInputError(f"tf-serving client: sends DT_FLOAT only, got {dt} {list(x.shape)}")
        req = self._pb.predict_pb2.PredictRequest()
        req.CopyFrom(self._template)
        self._wire.to_tensor(x, req.inputs[self.input_key])
        return req

    def _named_request(self, x: dict):
        """``{input name: array}``: every input by name with its own DataType (DT_FLOAT,
        DT_INT64, DT_BOOL, ...); the answer then holds every output of the signature."""
        req = self._pb.predict_pb2.PredictRequest()
        req.CopyFrom(self._named_template)
        for name, a in x.items():
            try:
                self._wire.to_tensor(a, req.inputs[name])
            except (AttributeError, ValueError) as exc:
                raise BadInputError(f"tf-serving client: input {name!r}: {exc}") from None
        return req

    def _result(self, resp, trailing, named: bool = False) -> ClientResult:
        outs = resp.outputs
        if named or self.output_key is None:
            # by name: every output of the answer; unnamed and no output_key: the only one as it
            # is, or every one by name when the signature has several
            output = {k: self._wire.to_array(t, f"output {k!r}") for k, t in outs.items()}
            if not named and len(output) == 1:
                output = next(iter(output.values()))
        else:
            if self.output_key not in outs:
                raise ServingError(f"tf-serving answer has outputs {sorted(outs)}, not {self.output_key!r}")
            output = self._wire.to_array(outs[self.output_key], f"output {self.output_key!r}")
        md = _metadata(trailing)
        server = md.get(self._wire.MD_SERVER)
        if server is None:
            return ClientResult(output=output, server=self.server)
        return ClientResult(output=output, server_inference_ns=int(md.get(self._wire.MD_INFERENCE_NS, 0)),
                            server_queue_ns=int(md.get(self._wire.MD_QUEUE_NS, 0)), server=server)

    def _error(self, exc) -> ServingError:
        return error_from_status(exc.code(), exc.details() or "")

    def score(self, x: np.ndarray, traceparent: str | None = None) -> ClientResult:
        req = self._request(x)
        try:
            resp, call = self._predict.Predict.with_call(req, timeout=self.timeout_s)
        except self._grpc.RpcError as exc:
            raise self._error(exc) from None
        return self._result(resp, call.trailing_metadata(), isinstance(x, dict))

    def score_async(self, x: np.ndarray, traceparent: str | None = None) -> cf.Future:
        """A native gRPC future, adapted to a concurrent.futures.Future of ClientResult."""
        out: cf.Future = cf.Future()
        named = isinstance(x, dict)
        try:
            call = self._predict.Predict.future(self._request(x), timeout=self.timeout_s)
        except BadInputError as exc:
            out.set_exception(exc)
            return out
        rpc_error = self._grpc.RpcError

        def done(c):
            try:
                out.set_result(self._result(c.result(), c.trailing_metadata(), named))
            except rpc_error as exc:
                out.set_exception(self._error(exc))
            except Exception as exc:  # noqa: BLE001 - delivered to the caller
                out.set_exception(exc)

        call.add_done_callback(done)
        return out

    # -- model status / metadata ---------------------------------------------------------------
    def health(self) -> bool:
        if self._models is None:  # stubs without ModelService (tensorflow-protobuf): metadata answers
            try:
                self.describe()
                return True
            except ModelNotFoundError:
                return False
        req = self._pb.get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(req.model_spec, signature=False)
        try:
            resp = self._models.GetModelStatus(req, timeout=min(self.timeout_s, 5.0))
        except self._grpc.RpcError as exc:
            err = self._error(exc)
            if isinstance(err, ModelNotFoundError):
                return False
            raise err from None
        available = self._pb.get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return any(v.state == available for v in resp.model_version_status)

    def describe(self) -> dict:
        pb = self._pb
        req = pb.get_model_metadata_pb2.GetModelMetadataRequest()
        self._fill_spec(req.model_spec, signature=False)
        req.metadata_field.append("signature_def")
        try:
            resp = self._predict.GetModelMetadata(req, timeout=self.timeout_s)
        except self._grpc.RpcError as exc:
            raise self._error(exc) from None
        sigs = pb.get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in resp.metadata or not resp.metadata["signature_def"].Unpack(sigs):
            raise ServingError("tf-serving GetModelMetadata answer has no signature_def")
        name = self.signature_name or "serving_default"
        if name not in sigs.signature_def:
            raise BadInputError(f"model {self.model!r} has no signature {name!r}; has {sorted(sigs.signature_def)}")
        sig = sigs.signature_def[name]
        w = self._wire

        def specs(infos) -> list[dict]:
            return [{"name": k, "dtype": w.dtype_name(v.dtype), "shape": w.shape_of(v.tensor_shape)}
                    for k, v in sorted(infos.items())]

        return {"inputs": specs(sig.inputs), "outputs": specs(sig.outputs), "signature": name,
                "method": sig.method_name, "version": resp.model_spec.version.value or None}

    def close(self) -> None:
        super().close()
        self._channel.close()


CLIENTS = (TFServingClient,)
