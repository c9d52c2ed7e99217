"""Client of Triton Inference Server over the KServe v2 gRPC protocol (``tritonclient.grpc``).

Kind ``"triton"``; the server it talks to is started by :mod:`serving.triton.launcher` (or is any
Triton / KServe v2 gRPC server)::

    from serving.clients import create_client

    c = create_client("triton", "127.0.0.1:8001", "ffnn", timeout_s=5.0)
    c.health()                 # ServerReady and ModelReady("ffnn")
    c.describe()               # ModelMetadata: inputs/outputs with dtype and shape (-1 = dynamic)
    r = c.score(x)             # ModelInfer; r.output float32 [b, 10] (read-only view of the reply)
    f = c.score_async(x)       # ModelInfer as a native gRPC future -> Future[ClientResult]
    rs = c.score_stream(xs)    # one ModelStreamInfer bidirectional stream for all xs, in order
    c.close()

Named tensors (serving.models.spec): ``score({"features": f32, "mask": i64})`` sends one
InferInput per input name with its own datatype (FP32, INT64, BOOL, ...) and returns
``{output name: array}`` for every output; so does an unnamed array sent to a model with several
outputs. A model of one input may be sent by name too (the answer then comes back by name). The
tensors are the zoo's for a built-in model, else the server's model metadata (asked on the first
call) plus its model config for Triton's reshapes: a tensor of no item axis (``[b]``, e.g. a
label per item) is dims ``[1]`` reshaped to ``[]`` (Triton wants non-empty dims), so it travels
as ``[b, 1]`` and the client hands back ``[b]``.

Options: ``timeout_s`` (gRPC deadline of every call; a stream of n inputs gets n * timeout_s),
``max_in_flight`` (unused: ``score_async`` is native), ``model_version`` ("" = the server's
policy), ``input_name`` / ``output_name`` (the name of a model's only input / output, when it
differs from the zoo's or the server's), ``streaming`` (True: ``score_stream`` uses ModelStreamInfer; False:
pipelined unary calls), ``root_cert_file`` (PEM roots: TLS to the server).

Errors are :mod:`serving.errors` exceptions: an input of another dtype than the model's (refused
here), names that are not the model's inputs (refused here), or a shape the model does not take
-> :class:`BadInputError` (``INVALID_ARGUMENT``); a model the server does not host ->
:class:`ModelNotFoundError` (``NOT_FOUND``); the deadline passed -> :class:`DeadlineExceededError`;
server unreachable -> :class:`UnavailableError`; the model failed -> :class:`BackendError`.
Stream responses carry only a message (no status code), which is classified by its text.

``ClientResult.server`` is ``"triton <version>"`` from ServerMetadata, followed by the server id in
parentheses when it is not plain ``triton`` -- ``"triton 2.51.0 (pytriton 0.7.0)"`` for our
launcher. Triton reports no per-request timings in its replies: ``server_inference_ns`` and
``server_queue_ns`` are 0 (its statistics endpoint has them in aggregate).

Dependency note: the core environment pins ``tritonclient==2.71.0`` without the ``[grpc]`` extra
(that extra pins grpcio<1.68, and 2.73's stubs refuse grpcio<1.81); the module uses the core's own
grpcio and protobuf, which run 2.71's generated code.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from typing import NamedTuple

import numpy as np
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype

from serving.clients.base import ClientResult, ExternalClient
from serving.errors import (
    BackendError,
    BadInputError,
    DeadlineExceededError,
    ModelNotFoundError,
    ServingError,
    UnavailableError,
    error_from_status,
)
from serving.models import MODELS

_BAD_INPUT_HINTS = ("unexpected shape", "unexpected datatype", "unexpected inference input",
                    "invalid argument", "batch size", "batch-size")
_NOT_FOUND_HINTS = ("unknown model", "is not found", "not found")


def _triton_error(exc: Exception) -> ServingError:
    """The serving.errors exception for a tritonclient ``InferenceServerException``."""
    status = exc.status() if hasattr(exc, "status") else None
    message = exc.message() if hasattr(exc, "message") else str(exc)
    message = message or str(exc)
    if status:                                   # "StatusCode.INVALID_ARGUMENT"
        return error_from_status(str(status).rsplit(".", 1)[-1], message)
    low = message.lower()
    if "deadline exceeded" in low:
        return DeadlineExceededError(message)
    if any(h in low for h in _NOT_FOUND_HINTS):
        return ModelNotFoundError(message)
    if any(h in low for h in _BAD_INPUT_HINTS):
        return BadInputError(message)
    if "unavailable" in low or "failed to connect" in low:
        return UnavailableError(message)
    return BackendError(message)


class _Tensor(NamedTuple):
    """One input or output of the served model as the client sends / reads it."""

    name: str
    datatype: str                       # KServe v2 datatype: FP32, INT64, BOOL, ...
    dtype: np.dtype
    dims: tuple[int, ...] | None = None     # per-item dims on the wire, where Triton reshapes ...
    reshape: tuple[int, ...] | None = None  # ... to these (the model's own per-item shape)


def _from_spec(t) -> _Tensor:
    """A tensor of a model spec (serving.models.spec.TensorSpec) as our Triton server binds it: a
    tensor of no item axis travels as dims [1] reshaped to [] (serving.triton.server)."""
    dt = np.dtype(t.dtype)
    return _Tensor(t.name, np_to_triton_dtype(dt), dt, *(((1,), ()) if not t.shape else (None, None)))


class TritonClient(ExternalClient):
    kind = "triton"
    server = "triton"

    def __init__(self, target: str, model: str, timeout_s: float = 5.0, max_in_flight: int = 1,
                 model_version: str = "", input_name: str | None = None, output_name: str | None = None,
                 streaming: bool = True, root_cert_file: str | None = None, **options):
        super().__init__(target, model, timeout_s=timeout_s, max_in_flight=max_in_flight, **options)
        spec = MODELS.get(model)
        self.model_version = str(model_version)
        self.streaming = bool(streaming)
        self._tgrpc = tgrpc
        self._client = tgrpc.InferenceServerClient(url=target, ssl=bool(root_cert_file),
                                                   root_certificates=root_cert_file)
        self._given = (input_name, output_name)
        self.input_name = input_name
        self.output_name = output_name
        # A built-in model's tensors are known here; a model file's are asked of the server on the
        # first call (:meth:`_learn`: model metadata, and the model config for Triton's reshapes).
        self._ins: list[_Tensor] | None = None
        self._outs: list[_Tensor] = []
        self._outputs = None
        if spec is not None:
            self._set_tensors([_from_spec(t) for t in spec.inputs], [_from_spec(t) for t in spec.outputs])
        self._server_name: str | None = None
        self._stream_lock = threading.Lock()

    # -- the model's tensors --------------------------------------------------------------------

    def _set_tensors(self, ins: list[_Tensor], outs: list[_Tensor]) -> None:
        given_in, given_out = self._given
        if given_in and len(ins) == 1:
            ins = [ins[0]._replace(name=given_in)]
        if given_out and len(outs) == 1:
            outs = [outs[0]._replace(name=given_out)]
        self.input_name, self.output_name = ins[0].name, outs[0].name
        self._in_dtype = ins[0].dtype
        self._in_datatype = ins[0].datatype
        # one input of no reshape: an unnamed array goes as it is (the hot path)
        self._plain_in = len(ins) == 1 and ins[0].dims is None
        # one output of no reshape: an unnamed request gets that array back as it is
        self._plain_out = len(outs) == 1 and outs[0].dims is None
        self._outs = outs
        self._outputs = [self._tgrpc.InferRequestedOutput(t.name) for t in outs]
        self._ins = ins

    def _learn(self) -> None:
        """Every input and output of the model (name, datatype) from the server's model metadata,
        and Triton's reshapes (a tensor of no item axis is dims [1] on the wire) from its model
        config (a server that does not show its config: none)."""
        try:
            md = self._client.get_model_metadata(self.model, self.model_version, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _triton_error(exc) from None
        reshapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        try:
            cfg = self._client.get_model_config(self.model, self.model_version,
                                                client_timeout=self.timeout_s).config
            for io in (*cfg.input, *cfg.output):
                if io.HasField("reshape"):
                    reshapes[io.name] = (tuple(int(d) for d in io.dims), tuple(int(d) for d in io.reshape.shape))
        except InferenceServerException:
            pass

        def tensors(ts) -> list[_Tensor]:
            out = []
            for t in ts:
                np_dtype = triton_to_np_dtype(t.datatype)
                if np_dtype is None:
                    raise BackendError(f"model {self.model!r}: tensor {t.name!r} has datatype "
                                       f"{t.datatype}, which this client cannot carry")
                out.append(_Tensor(t.name, t.datatype, np.dtype(np_dtype), *reshapes.get(t.name, (None, None))))
            return out

        ins, outs = tensors(md.inputs), tensors(md.outputs)
        if not ins or not outs:
            raise BackendError(f"model {self.model!r}: metadata lists no inputs or no outputs")
        self._set_tensors(ins, outs)

    # -- helpers ----------------------------------------------------------------------------

    def _inputs(self, x) -> list:
        """The InferInputs of ``x``: an array (a model of one input) or ``{input name: array}``."""
        if isinstance(x, dict):
            return self._named_inputs(x)
        if self._ins is None:
            self._learn()
        if not isinstance(x, np.ndarray) or x.dtype != self._in_dtype:
            raise BadInputError(f"model {self.model!r}: input must be a {self._in_dtype.name} ndarray, got "
                                f"{getattr(x, 'dtype', type(x).__name__)}")
        if not self._plain_in:
            if len(self._ins) > 1:
                raise BadInputError(f"model {self.model!r} takes named inputs "
                                    f"{', '.join(t.name for t in self._ins)}, got one unnamed tensor")
            return [self._input(self._ins[0], x)]
        inp = self._tgrpc.InferInput(self.input_name, list(x.shape), self._in_datatype)
        inp.set_data_from_numpy(x)
        return [inp]

    def _named_inputs(self, x: dict) -> list:
        if self._ins is None:
            self._learn()
        names = [t.name for t in self._ins]
        if len(x) != len(names) or any(n not in x for n in names):
            raise BadInputError(f"model {self.model!r}: inputs {sorted(x)} do not match the model's {names}")
        return [self._input(t, x[t.name]) for t in self._ins]

    def _input(self, t: _Tensor, a):
        if not isinstance(a, np.ndarray) or a.dtype != t.dtype:
            raise BadInputError(f"model {self.model!r}: input {t.name!r} must be a {t.dtype.name} ndarray, "
                                f"got {getattr(a, 'dtype', type(a).__name__)}")
        if t.dims is not None:          # Triton reshapes it: the wire carries its dims
            if a.ndim < 1 or a.shape[1:] != t.reshape:
                raise BadInputError(f"model {self.model!r}: input {t.name!r} must be "
                                    f"[b, {', '.join(map(str, t.reshape))}], got {list(a.shape)}")
            a = a.reshape((a.shape[0], *t.dims))
        inp = self._tgrpc.InferInput(t.name, list(a.shape), t.datatype)
        inp.set_data_from_numpy(a)
        return inp

    def identify(self) -> str:
        """``triton <version> (<id>)`` from ServerMetadata, asked once."""
        if self._server_name is None:
            try:
                md = self._client.get_server_metadata(client_timeout=self.timeout_s)
            except InferenceServerException:
                return self.server
            name = md.name or "triton"
            label = f"triton {md.version}".strip()
            if name != "triton":
                label += f" ({name.replace('pytriton-', 'pytriton ', 1)})"
            self._server_name = label
        return self._server_name

    def _output(self, result, t: _Tensor) -> np.ndarray:
        out = result.as_numpy(t.name)
        if out is None:
            raise BackendError(f"model {self.model!r}: reply has no output {t.name!r}")
        if t.dims is not None:
            out = out.reshape((out.shape[0], *t.reshape))
        return out

    def _result(self, result) -> ClientResult:
        """The reply's output to an unnamed request: the array (the hot path), or
        ``{output name: array}`` when the model has several outputs."""
        if not self._plain_out:
            return self._named_result(result, len(self._outs) > 1)
        out = result.as_numpy(self.output_name)
        if out is None:
            raise BackendError(f"model {self.model!r}: reply has no output {self.output_name!r}")
        return ClientResult(output=out, server=self._server_name or self.identify())

    def _named_result(self, result, named: bool = True) -> ClientResult:
        """``{output name: array}`` of every output (``named``), else the only one."""
        if named:
            output = {t.name: self._output(result, t) for t in self._outs}
        else:
            output = self._output(result, self._outs[0])
        return ClientResult(output=output, server=self._server_name or self.identify())

    def _answer(self, result, x) -> ClientResult:
        return self._named_result(result) if isinstance(x, dict) else self._result(result)

    # -- ExternalClient -----------------------------------------------------------------------

    def score(self, x: np.ndarray, traceparent: str | None = None) -> ClientResult:
        inputs = self._inputs(x)
        try:
            result = self._client.infer(self.model, inputs, model_version=self.model_version,
                                        outputs=self._outputs, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _triton_error(exc) from None
        if isinstance(x, dict):
            return self._named_result(result)
        return self._result(result)

    def score_async(self, x: np.ndarray, traceparent: str | None = None) -> cf.Future:
        """Native: ``async_infer`` (a gRPC future), adapted to a Future of ClientResult."""
        out: cf.Future = cf.Future()
        inputs = self._inputs(x)
        answer = self._named_result if isinstance(x, dict) else self._result
        if self._server_name is None:
            self.identify()

        def done(result, error):
            try:
                if error is not None:
                    out.set_exception(_triton_error(error))
                else:
                    out.set_result(answer(result))
            except Exception as exc:  # noqa: BLE001 - delivered to the caller
                if not out.done():
                    out.set_exception(exc)

        try:
            self._client.async_infer(self.model, inputs, done, model_version=self.model_version,
                                     outputs=self._outputs, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            out.set_exception(_triton_error(exc))
        return out

    def score_stream(self, xs: list[np.ndarray]) -> list[ClientResult]:
        """All of ``xs`` over one ModelStreamInfer stream (requests tagged with their index,
        results put back in input order). Raises the first error any of them got."""
        if not self.streaming:
            return super().score_stream(xs)
        if not xs:
            return []
        inputs = [self._inputs(x) for x in xs]
        if self._server_name is None:
            self.identify()
        n = len(xs)
        results: dict[int, object] = {}
        errors: list[Exception] = []
        cond = threading.Condition()
        closing = threading.Event()     # after this, the stream's own teardown is not an answer

        def on_response(result, error):
            with cond:
                if closing.is_set():
                    return
                if error is not None:
                    errors.append(error)
                else:
                    results[int(result.get_response().id)] = result
                cond.notify_all()

        budget = self.timeout_s * n
        with self._stream_lock:     # tritonclient: one stream per client at a time
            try:
                self._client.start_stream(callback=on_response, stream_timeout=budget)
                for i, inp in enumerate(inputs):
                    self._client.async_stream_infer(self.model, inp, model_version=self.model_version,
                                                    outputs=self._outputs, request_id=str(i))
                deadline = time.monotonic() + budget
                with cond:
                    # a stream-level failure (status set) ends the stream: stop waiting at once
                    while (len(results) + len(errors) < n
                           and not any(getattr(e, "status", lambda: None)() for e in errors)):
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise DeadlineExceededError(
                                f"model {self.model!r}: {n - len(results)} of {n} streamed requests "
                                f"unanswered after {budget:.1f}s")
                        cond.wait(left)
            except InferenceServerException as exc:
                raise _triton_error(exc) from None
            finally:
                closing.set()
                try:
                    # every answer in: close the stream normally; else cancel what is pending
                    self._client.stop_stream(cancel_requests=len(results) + len(errors) < n)
                except Exception:  # noqa: BLE001 - the stream may already be broken
                    pass
        with cond:
            if errors:
                raise _triton_error(errors[0])
            return [self._answer(results[i], xs[i]) for i in range(n)]

    def health(self) -> bool:
        """ServerReady and ModelReady(model). Raises (UnavailableError, ...) when the server
        cannot be reached."""
        try:
            ready = (self._client.is_server_ready(client_timeout=self.timeout_s)
                     and self._client.is_model_ready(self.model, self.model_version,
                                                     client_timeout=self.timeout_s))
        except InferenceServerException as exc:
            raise _triton_error(exc) from None
        if ready and self._server_name is None:
            self.identify()
        return bool(ready)

    def describe(self) -> dict:
        try:
            md = self._client.get_model_metadata(self.model, self.model_version,
                                                 client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _triton_error(exc) from None

        def tensors(ts) -> list[dict]:
            out = []
            for t in ts:
                np_dtype = triton_to_np_dtype(t.datatype)
                out.append({"name": t.name,
                            "dtype": np.dtype(np_dtype).name if np_dtype is not None else t.datatype,
                            "shape": [int(s) for s in t.shape]})
            return out

        return {"model": md.name, "versions": list(md.versions), "platform": md.platform,
                "server": self.identify(), "inputs": tensors(md.inputs), "outputs": tensors(md.outputs)}

    def close(self) -> None:
        super().close()
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing twice
            pass


CLIENTS = (TritonClient,)
