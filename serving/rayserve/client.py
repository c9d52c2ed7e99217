"""Clients of the Ray Serve path (:mod:`serving.rayserve`): ``ray-serve`` (HTTP, as the paper)
and ``ray-serve-grpc`` (Ray Serve's gRPC proxy speaking our ``crayfish.v1.Scoring``).

``ray-serve`` -- HTTP/1.1 with keep-alive, stdlib only (``http.client``; one persistent
connection per calling thread, so ``score_async``'s ``max_in_flight`` threads each keep theirs):

    POST /models/<model>/score       body: raw little-endian float32, C order
         X-Crayfish-Shape: 1,1,784   Content-Type: application/octet-stream
    200  body: raw float32 output;  X-Crayfish-Shape, X-Crayfish-Inference-Ns,
         X-Crayfish-Queue-Ns, X-Crayfish-Server
    4xx/5xx  text/plain message; X-Crayfish-Error: <gRPC status name>

Named tensors (``score({"features": f32, "mask": i64})``): the body is every tensor's raw bytes
one after the other, ``X-Crayfish-Tensors: [["features","float32",[4,6]],["mask","int64",[4,6]]]``
names them (and no ``X-Crayfish-Shape``); the answer comes back the same way,
``{output name: array}`` -- for a named request, and for a model with several outputs.

The original Crayfish sent the batch as a JSON/text list of numbers and parsed a text list back;
the raw body is ~5x smaller for float32 (4 bytes vs ~10-20 characters per value) and costs no
formatting or parsing on either side. Errors: the HTTP status goes back to a gRPC status name
through the one table in :mod:`serving.rayserve.wire` and from there to an exception through
:func:`serving.errors.error_from_status`: 400 -> BadInputError, 404 (also Ray's own "no such
route") -> ModelNotFoundError, 503 -> UnavailableError, 500 -> BackendError; a socket timeout
(``timeout_s`` per socket operation) -> DeadlineExceededError. A keep-alive connection the
server closed while idle is retried once on a fresh connection.

``ray-serve-grpc`` -- :class:`serving.scoring.client.ScoringClient` with Ray's routing metadata
(``application: <model>``, added to every call by a channel interceptor), since Ray Serve's
gRPC proxy picks the application from it. Errors map as on our own Scoring server (one place:
:mod:`serving.errors`); Ray's "no such application" is NOT_FOUND -> ModelNotFoundError. The
proxy does not implement ``grpc.health.v1``, so ``health()`` / ``wait_ready()`` ask the model's
application for ``DescribeModel``. Named tensors travel in ``ScoreRequest.inputs`` /
``ScoreResponse.outputs``, as on the Scoring server. ``score_stream`` uses the bidi ``ScoreStream`` (Ray Serve
>= 2.5x streams both ways through its proxy); the whole stream gets ``timeout_s`` per item.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading

import grpc
import numpy as np

from crayfish.tensor import DTYPE_NAMES
from crayfish.v1 import scoring_pb2, scoring_pb2_grpc
from serving.clients.base import ClientResult, ExternalClient
from serving.errors import (
    BadInputError,
    DeadlineExceededError,
    ServingError,
    UnavailableError,
    error_from_status,
)
from serving.rayserve import wire
from serving.scoring.client import ScoringClient

_DTYPE_NAME = {code: name for name, code in DTYPE_NAMES.items()}
# a reused keep-alive connection that turns out to be closed fails with one of these
_STALE = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError,
          BrokenPipeError, ConnectionAbortedError)


def _host_port(target: str) -> tuple[str, int]:
    t = target.split("://", 1)[-1].rstrip("/")
    host, _, port = t.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"ray-serve target must be host:port, got {target!r}")
    return host.strip("[]"), int(port)


class RayServeHttpClient(ExternalClient):
    kind = "ray-serve"
    server = "ray-serve"

    def __init__(self, target: str, model: str, timeout_s: float = 5.0, max_in_flight: int = 1, **options):
        super().__init__(target, model, timeout_s=timeout_s, max_in_flight=max_in_flight, **options)
        self._host, self._port = _host_port(target)
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        base = wire.route(model)
        self._score_path = base + wire.SCORE_PATH
        self._metadata_path = base + wire.METADATA_PATH
        self._health_path = base + wire.HEALTH_PATH

    # -- connections ---------------------------------------------------------------------------
    def _conn(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, False
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn, True

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)

    def _call(self, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        for attempt in (0, 1):
            try:
                conn, fresh = self._conn()
            except TimeoutError:
                raise DeadlineExceededError(f"connecting to {self.target}: no answer in {self.timeout_s:g}s") from None
            except OSError as exc:
                raise UnavailableError(f"cannot connect to ray-serve at {self.target}: {exc}") from None
            try:
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
                data = resp.read()
            except TimeoutError:
                self._drop(conn)
                raise DeadlineExceededError(
                    f"{method} {path} on {self.target}: no answer within {self.timeout_s:g}s") from None
            except _STALE as exc:
                self._drop(conn)
                if fresh or attempt:
                    raise UnavailableError(f"{method} {path} on {self.target}: connection lost ({exc!r})") from None
                continue  # an idle keep-alive connection the server had closed: once more, fresh
            except OSError as exc:
                self._drop(conn)
                raise UnavailableError(f"{method} {path} on {self.target}: {exc}") from None
            if resp.will_close:
                self._drop(conn)
            return resp.status, resp.headers, data
        raise AssertionError("unreachable")

    @staticmethod
    def _error(status: int, headers: http.client.HTTPMessage, data: bytes) -> ServingError:
        message = data.decode("utf-8", "replace").strip() or f"HTTP {status}"
        code = headers.get(wire.H_ERROR) or wire.STATUS_FOR_HTTP.get(status)
        if code is None:
            return ServingError(f"HTTP {status}: {message}")
        return error_from_status(code, message)

    # -- the interface ---------------------------------------------------------------------------
    def score(self, x: np.ndarray, traceparent: str | None = None) -> ClientResult:
        if isinstance(x, dict):         # named tensors: every input by name, in its own dtype
            try:
                body, headers = wire.encode_named(x)
            except ValueError as exc:
                raise BadInputError(f"model {self.model!r}: {exc}") from None
        else:
            body, headers = wire.encode(x)
        headers["Content-Type"] = wire.CONTENT_TYPE
        status, h, data = self._call("POST", self._score_path, body, headers)
        if status != 200:
            raise self._error(status, h, data)
        shape = h.get(wire.H_SHAPE)
        if shape is None and wire.H_TENSORS in h:   # named answer: {output name: array}
            out = wire.decode_named(data, h[wire.H_TENSORS])
        else:
            out = wire.decode(data, shape, h.get(wire.H_DTYPE))
        return ClientResult(output=out, server_inference_ns=int(h.get(wire.H_INFERENCE_NS) or 0),
                            server_queue_ns=int(h.get(wire.H_QUEUE_NS) or 0),
                            server=h.get(wire.H_SERVER) or self.server)

    def health(self) -> bool:
        status, _, _ = self._call("GET", self._health_path)
        return status == 200

    def describe(self) -> dict:
        status, h, data = self._call("GET", self._metadata_path)
        if status != 200:
            raise self._error(status, h, data)
        return json.loads(data)

    def close(self) -> None:
        super().close()
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            c.close()


class _ApplicationMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                           grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds Ray Serve's routing metadata (``application``) to every call on the channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]):
        self._metadata = metadata

    def _details(self, d: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(d.method, d.timeout, tuple(d.metadata or ()) + self._metadata,
                            d.credentials, d.wait_for_ready, d.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


class RayServeGrpcClient(ScoringClient):
    kind = "ray-serve-grpc"
    server = "ray-serve"

    def __init__(self, target: str, model: str, timeout_s: float = 5.0, max_in_flight: int = 1,
                 application: str | None = None, **options):
        super().__init__(target, model, timeout_s=timeout_s, max_in_flight=max_in_flight, **options)
        # Ray Serve's gRPC proxy routes on the "application" metadata; apps are named after models
        self.application = application or model
        self._channel = grpc.intercept_channel(self._channel,
                                               _ApplicationMetadata((("application", self.application),)))
        self._stub = scoring_pb2_grpc.ScoringStub(self._channel)

    def _rpc_error(self, exc: grpc.RpcError) -> ServingError:
        return error_from_status(exc.code(), exc.details() or "")

    def health(self) -> bool:
        try:
            d = self._stub.DescribeModel(scoring_pb2.DescribeModelRequest(model=self.model),
                                         timeout=self.timeout_s)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise self._rpc_error(exc) from None
        return d.model == self.model

    def describe(self) -> dict:
        try:
            d = self._stub.DescribeModel(scoring_pb2.DescribeModelRequest(model=self.model),
                                         timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise self._rpc_error(exc) from None

        def specs(items):
            return [{"name": t.name, "dtype": _DTYPE_NAME.get(t.dtype, str(t.dtype)), "shape": list(t.shape)}
                    for t in items]

        return {"model": d.model, "backend": d.backend, "inputs": specs(d.inputs), "outputs": specs(d.outputs)}

    # Ray's proxy has no grpc.health.v1: poll health() (DescribeModel) like any client
    wait_ready = ExternalClient.wait_ready

    def score_stream(self, xs: list[np.ndarray]) -> list[ClientResult]:
        """All of ``xs`` over one bidi ``ScoreStream``; results in input order (matched by
        request_id). The first failure ends the stream and is raised."""
        if not xs:
            return []
        reqs = [self._request(x) for x in xs]
        index = {r.request_id: i for i, r in enumerate(reqs)}
        out: list[ClientResult | None] = [None] * len(reqs)
        try:
            for resp in self._stub.ScoreStream(iter(reqs), timeout=self.timeout_s * len(reqs)):
                out[index[resp.request_id]] = self._result(resp)
        except grpc.RpcError as exc:
            raise self._rpc_error(exc) from None
        missing = sum(r is None for r in out)
        if missing:
            raise ServingError(f"ScoreStream ended with {missing} of {len(reqs)} requests unanswered")
        return out  # type: ignore[return-value]


CLIENTS = (RayServeHttpClient, RayServeGrpcClient)
