"""TF Serving's ``PredictionService`` (Predict, GetModelMetadata) and ``ModelService``
(GetModelStatus) over :class:`serving.core.ScoringCore`; see :mod:`serving.tfserving`.

Thin, like the Scoring servicer: decode the ``TensorProto`` (:mod:`serving.tfserving.wire`),
``core.score(model, x, deadline)``, encode; every failure goes through
:func:`serving.errors.grpc_status` to ``context.abort``. Needs the TF Serving stubs (the
``tensorflow`` environment).
"""

from __future__ import annotations

import atexit
import logging
from typing import Any, Mapping

import grpc

from serving.core import CoreSettings, ScoringCore
from serving.errors import BadInputError, ModelNotFoundError, grpc_status
from serving.models.build import resolve_spec
from serving.scoring.server import request_deadline
from serving.tfserving import SERVER_NAME, wire

log = logging.getLogger(__name__)

PROTOCOL_SERVER_NAME = SERVER_NAME

_pb = wire.protos()
predict_pb2 = _pb.predict_pb2
get_model_metadata_pb2 = _pb.get_model_metadata_pb2
get_model_status_pb2 = _pb.get_model_status_pb2
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
_LOADING = get_model_status_pb2.ModelVersionStatus.LOADING

EXTRA_MODEL_KEYS = {"model", "backend", "options", "instances", "warmup", "max_queue"}


class _Route:
    __slots__ = ("core", "model", "spec", "input_names", "output_names")

    def __init__(self, core: ScoringCore, model: str):
        self.core = core
        self.model = model            # the model name inside that core
        st = core.settings
        spec_name = next((m.spec_name for m in st.served_models if m.name == model), model)
        self.spec = resolve_spec(spec_name, st.models_dir)   # a built-in model, or a model file
        self.input_names = [t.name for t in self.spec.inputs]
        self.output_names = [t.name for t in self.spec.outputs]


class TFServingServicer:
    """Routes TF Serving model names to a core and a model in it.

    ``core``'s models are served under their own names; ``extra`` maps more served names to
    ``(core, model)`` (e.g. a sleep-backed ``ffnn-hung``).
    """

    def __init__(self, core: ScoringCore, extra: Mapping[str, tuple[ScoringCore, str]] | None = None):
        self.core = core
        self.routes: dict[str, _Route] = {m: _Route(core, m) for m in core.models}
        for name, (c, m) in (extra or {}).items():
            if name in self.routes:
                raise ValueError(f"tf-serving: model name {name!r} is served twice")
            self.routes[name] = _Route(c, m)

    # -- shared --------------------------------------------------------------------------------
    def _route(self, spec: Any) -> _Route:
        name = spec.name
        if not name:
            raise BadInputError("model_spec.name is empty")
        r = self.routes.get(name)
        if r is None:
            raise ModelNotFoundError(f"Servable not found for request: model {name!r} is not served "
                                     f"here; served: {', '.join(sorted(self.routes))}")
        if spec.HasField("version") and spec.version.value != wire.SERVED_VERSION:
            raise ModelNotFoundError(f"Servable not found for request: model {name!r} version "
                                     f"{spec.version.value}; served: version {wire.SERVED_VERSION}")
        if spec.version_label:
            raise ModelNotFoundError(f"Servable not found for request: model {name!r} version label "
                                     f"{spec.version_label!r}; no labels are assigned here")
        return r

    @staticmethod
    def _signature(spec: Any) -> str:
        sig = spec.signature_name or wire.DEFAULT_SIGNATURE
        if sig != wire.DEFAULT_SIGNATURE:
            raise BadInputError(f"Serving signature key {sig!r} not found; the only signature is "
                                f"{wire.DEFAULT_SIGNATURE!r}")
        return sig

    @staticmethod
    def _answer_spec(out: Any, request_spec: Any, sig: str | None) -> None:
        out.name = request_spec.name
        out.version.value = wire.SERVED_VERSION
        if sig is not None:
            out.signature_name = sig

    # -- PredictionService ---------------------------------------------------------------------
    def Predict(self, request, context):
        try:
            route = self._route(request.model_spec)
            sig = self._signature(request.model_spec)
            names = route.input_names
            inputs = request.inputs
            if len(names) == 1:     # one input: the single-tensor path
                key = names[0]
                if len(inputs) != 1 or key not in inputs:
                    raise BadInputError(f"model {request.model_spec.name!r}: inputs "
                                        f"{sorted(inputs)}; the signature takes exactly {key!r}")
                x = wire.to_array(inputs[key], f"input {key!r}")
            else:                   # several: every one by name, each in its own dtype
                if len(inputs) != len(names) or any(n not in inputs for n in names):
                    raise BadInputError(f"model {request.model_spec.name!r}: inputs {sorted(inputs)}; "
                                        f"the signature takes {names}")
                x = {n: wire.to_array(inputs[n], f"input {n!r}") for n in names}
            for f in request.output_filter:
                if f not in route.output_names:
                    raise BadInputError(f"output_filter {f!r} is not an output of the signature; "
                                        f"outputs: {', '.join(map(repr, route.output_names))}")
            r = route.core.score(route.model, x, request_deadline(context))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status, one mapping
            context.abort(*grpc_status(exc))
        resp = predict_pb2.PredictResponse()
        self._answer_spec(resp.model_spec, request.model_spec, sig)
        y = r.output
        if isinstance(y, dict):     # several outputs: every one (or those of output_filter), by name
            for name in (request.output_filter or route.output_names):
                wire.to_tensor(y[name], resp.outputs[name])
        else:
            wire.to_tensor(y, resp.outputs[route.output_names[0]])
        context.set_trailing_metadata((
            (wire.MD_SERVER, PROTOCOL_SERVER_NAME),
            (wire.MD_INFERENCE_NS, str(r.inference_ns)),
            (wire.MD_QUEUE_NS, str(r.queue_ns)),
            (wire.MD_BACKEND, r.backend),
        ))
        return resp

    def GetModelMetadata(self, request, context):
        try:
            route = self._route(request.model_spec)
            fields = list(request.metadata_field)
            if not fields:
                raise BadInputError("GetModelMetadataRequest must specify at least one metadata_field")
            unsupported = [f for f in fields if f != "signature_def"]
            if unsupported:
                raise BadInputError(f"Metadata field(s) {unsupported} not supported; only 'signature_def'")
            d = route.core.describe(route.model)
        except Exception as exc:  # noqa: BLE001
            context.abort(*grpc_status(exc))
        meta = _pb.get_model_metadata_pb2.SignatureDefMap()
        sd = meta.signature_def[wire.DEFAULT_SIGNATURE]
        sd.method_name = wire.PREDICT_METHOD
        for side, infos in (("inputs", d["inputs"]), ("outputs", d["outputs"])):
            for i, t in enumerate(infos):
                ti = getattr(sd, side)[t["name"]]
                ti.name = (f"{wire.DEFAULT_SIGNATURE}_{t['name']}:0" if side == "inputs"
                           else f"StatefulPartitionedCall:{i}")
                ti.dtype = wire.dtype_enum(t["dtype"])
                wire.set_shape(ti.tensor_shape, t["shape"])
        resp = get_model_metadata_pb2.GetModelMetadataResponse()
        self._answer_spec(resp.model_spec, request.model_spec, None)
        resp.metadata["signature_def"].Pack(meta)
        context.set_trailing_metadata(((wire.MD_SERVER, PROTOCOL_SERVER_NAME), (wire.MD_BACKEND, d["backend"])))
        return resp

    # -- ModelService --------------------------------------------------------------------------
    def GetModelStatus(self, request, context):
        try:
            route = self._route(request.model_spec)
        except Exception as exc:  # noqa: BLE001
            context.abort(*grpc_status(exc))
        resp = get_model_status_pb2.GetModelStatusResponse()
        st = resp.model_version_status.add()
        st.version = wire.SERVED_VERSION
        st.state = _AVAILABLE if route.core.ready else _LOADING
        return resp


class _PredictionService(_pb.prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, impl: TFServingServicer):
        self.Predict = impl.Predict
        self.GetModelMetadata = impl.GetModelMetadata


class _ModelService(_pb.model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, impl: TFServingServicer):
        self.GetModelStatus = impl.GetModelStatus


def extra_core(name: str, entry: Mapping[str, Any], settings: CoreSettings | None = None) -> tuple[ScoringCore, str]:
    """A loaded core for one extra served model ``name`` -> ``{"model", "backend", "options",
    "instances", "warmup", "max_queue"}`` (``model`` defaults to ``name``, ``instances`` to 1,
    ``warmup`` to False for the sleep backend)."""
    unknown = sorted(set(entry) - EXTRA_MODEL_KEYS)
    if unknown:
        raise ValueError(f"tf-serving model {name!r}: unknown key(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(EXTRA_MODEL_KEYS))}")
    base = entry.get("model", name)
    backend = entry.get("backend", settings.backend if settings else "onnxruntime")
    st = CoreSettings(
        models=[base], backend=backend, backend_options=dict(entry.get("options") or {}),
        instances=int(entry.get("instances", 1)), warmup=bool(entry.get("warmup", backend != "sleep")),
        max_queue=int(entry.get("max_queue", settings.max_queue if settings else 1024)),
        models_dir=settings.models_dir if settings else None, service_name=f"tf-serving:{name}")
    return ScoringCore(st), base


def add_tfserving(server: grpc.Server, core: ScoringCore,
                  extra_models: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Protocol hook for :func:`serving.scoring.server.build_server` / ``serve``: serve
    ``tensorflow.serving.PredictionService`` and ``ModelService`` over ``core`` (plus a loaded
    core per ``extra_models`` entry, see :func:`extra_core`)."""
    extra: dict[str, tuple[ScoringCore, str]] = {}
    try:
        for name, entry in (extra_models or {}).items():
            extra[name] = extra_core(name, entry, core.settings)
    except BaseException:
        for c, _ in extra.values():
            c.close(0)
        raise
    for c, _ in extra.values():
        atexit.register(c.close, 1.0)
    impl = TFServingServicer(core, extra)
    _pb.prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(impl), server)
    _pb.model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(impl), server)
    if extra:
        log.info("tf-serving protocol: extra models %s", ", ".join(f"{n} ({c.settings.backend})"
                                                                for n, (c, _) in extra.items()))
    return [wire.PREDICTION_SERVICE, wire.MODEL_SERVICE]


__all__ = ["TFServingServicer", "add_tfserving", "extra_core", "PROTOCOL_SERVER_NAME"]

