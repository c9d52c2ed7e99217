"""The gRPC scoring server: ``crayfish.v1.Scoring`` + ``grpc.health.v1`` + reflection on one port.

:class:`ScoringServicer` is a thin adapter over :class:`serving.core.ScoringCore`: decode the
request's Tensor (:func:`crayfish.tensor.from_tensor`), call ``core.score`` /
``core.describe``, encode the answer; every failure goes through
:func:`serving.errors.grpc_status` to ``context.abort``. Nothing about queueing, batching or
instances is decided here.

Server (:func:`build_server` / :func:`serve`)
---------------------------------------------
- Binds ``settings.host:settings.port`` (loopback only by default; port 0 picks a free port,
  returned by :func:`build_server` and written to ``settings.ready_file`` by :func:`serve`);
  plaintext, or TLS (``grpc.ssl_server_credentials``) when ``settings.tls`` is set.
- ``grpc.health.v1.Health``: ``""`` and ``"crayfish.v1.Scoring"`` (and every service a
  protocol hook names) are ``NOT_SERVING`` until the core is ready, then ``SERVING``; back to
  ``NOT_SERVING`` when :func:`serve` begins shutting down.
- Server reflection (``grpc.reflection.v1alpha.ServerReflection``) lists every service, so
  ``grpcurl -plaintext 127.0.0.1:PORT list`` works.
- Messages up to ``settings.max_message_bytes`` both ways (gRPC's default 4 MB is too small for
  ResNet50 batches); ``SO_REUSEPORT`` off, so a taken port fails instead of being shared.

ScoreStream semantics
---------------------
Requests of one stream are scored concurrently -- up to ``settings.stream_max_in_flight`` at a
time (further requests are not read until one finishes, which back-pressures the client
through gRPC flow control) -- and each response is sent as soon as it is ready, so responses
may come out of order; each carries its request's ``request_id``. The stream's deadline (if
any) applies to every request on it.

Errors: ``ScoreResponse`` has no error field, so **the first request that fails ends the
stream** with that request's status (same codes as unary ``Score``); the status message starts
with ``request_id=<id>:`` and the trailing metadata carries ``crayfish-request-id: <id>``.
Responses already sent stand; requests without a response were not (or not known to be)
scored and may be retried on a new stream. Clients that must survive bad records should
validate them first, or use unary ``Score`` for them.

Adding a protocol
-----------------
Another gRPC protocol (e.g. TF Serving's ``tensorflow.serving.PredictionService``) is served
from the same server and port, over the same core, by a hook::

    def add_tfserving(server: grpc.Server, core: ScoringCore) -> list[str]:
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            TFServingServicer(core), server)       # thin: decode, core.score(...), encode,
        return ["tensorflow.serving.PredictionService"]   # errors via serving.errors.grpc_status

    server, core, port = build_server(settings, protocols=[add_tfserving])
    # or, from a config: ScoringSettings(protocols=["serving.tfserving:add_tfserving"])

The hook runs before the server starts; the service names it returns (optional) are added to
reflection and to health (NOT_SERVING until the core is ready, like the Scoring service).
"""

from __future__ import annotations

import importlib
import logging
import os
import queue
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from crayfish.tensor import DTYPE_NAMES, TensorError, arrays_from, fill_named, from_tensor, to_tensor
from crayfish.v1 import scoring_pb2, scoring_pb2_grpc
from observability.light import batch_tracing
from serving.core import ScoreResult, ScoringCore
from serving.errors import BadInputError, grpc_status
from serving.scoring import SERVER_NAME
from serving.scoring.settings import ScoringSettings

log = logging.getLogger(__name__)

SCORING_SERVICE = scoring_pb2.DESCRIPTOR.services_by_name["Scoring"].full_name  # crayfish.v1.Scoring
REQUEST_ID_METADATA = "crayfish-request-id"

ProtocolHook = Callable[[grpc.Server, ScoringCore], "Iterable[str] | None"]

_mono = time.monotonic
_NO_DEADLINE_S = 1e7  # time_remaining() above this means "no deadline" (gRPC reports ~infinity)


def request_deadline(context: grpc.ServicerContext) -> float | None:
    """The call's deadline as absolute ``time.monotonic()`` seconds, or None without one."""
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE_S:
        return None
    return _mono() + remaining


def decode_input(request: scoring_pb2.ScoreRequest):
    """The request's input: an array (``input``), or ``{name: array}`` (named ``inputs``)."""
    try:
        return arrays_from(request.inputs) if request.inputs else from_tensor(request.input)
    except TensorError as exc:
        raise BadInputError(f"model {request.model!r}: bad input tensor: {exc}") from None


def encode_response(request: scoring_pb2.ScoreRequest, r: ScoreResult) -> scoring_pb2.ScoreResponse:
    resp = scoring_pb2.ScoreResponse(
        model=request.model, request_id=request.request_id, inference_ns=r.inference_ns,
        queue_ns=r.queue_ns, server=SERVER_NAME, backend=r.backend)
    if isinstance(r.output, dict):      # several outputs, or a named request (ScoringCore.score)
        fill_named(resp.outputs, r.output)
    else:
        to_tensor(r.output, out=resp.output)
    return resp


_END = object()


def _traceparent(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent":
            return value
    return None


class ScoringServicer(scoring_pb2_grpc.ScoringServicer):
    """``crayfish.v1.Scoring`` over a :class:`ScoringCore` (see the module docstring)."""

    def __init__(self, core: ScoringCore, stream_max_in_flight: int = 8,
                 stream_workers: int = 8):
        self.core = core
        # Spans of traced calls (the worker's client span context arrives in the gRPC metadata).
        self.tracing = batch_tracing("scoring")
        self._traced = self.tracing.tracer is not None
        self.stream_max_in_flight = stream_max_in_flight
        self._stream_pool = futures.ThreadPoolExecutor(max_workers=stream_workers,
                                                       thread_name_prefix="stream")

    def close(self) -> None:
        self._stream_pool.shutdown(wait=False, cancel_futures=True)
        self.tracing.close()

    # -- unary ---------------------------------------------------------------------------------
    def Score(self, request, context):
        tp = _traceparent(context) if self._traced else None
        start = time.time_ns() if tp else 0
        try:
            r = self.core.score(request.model, decode_input(request), request_deadline(context))
        except Exception as exc:
            context.abort(*grpc_status(exc))
        resp = encode_response(request, r)
        if tp:
            self.tracing.record_server(tp, f"/{SCORING_SERVICE}/Score", start, r.queue_ns, r.inference_ns,
                                       time.time_ns(), request.model)
        return resp

    def DescribeModel(self, request, context):
        try:
            d = self.core.describe(request.model)
        except Exception as exc:
            context.abort(*grpc_status(exc))

        def specs(items):
            return [scoring_pb2.TensorSpec(name=t["name"], dtype=DTYPE_NAMES[t["dtype"]],
                                           shape=t["shape"]) for t in items]

        return scoring_pb2.ModelDescription(model=d["model"], backend=d["backend"],
                                            inputs=specs(d["inputs"]), outputs=specs(d["outputs"]))

    # -- bidi stream ---------------------------------------------------------------------------
    def _score_one(self, request, deadline, out: queue.SimpleQueue, window: threading.Semaphore):
        try:
            r = self.core.score(request.model, decode_input(request), deadline)
            out.put((request, encode_response(request, r), None))
        except BaseException as exc:  # noqa: BLE001 - reported on the stream
            out.put((request, None, exc))
        finally:
            window.release()

    def ScoreStream(self, request_iterator, context):
        deadline = request_deadline(context)
        out: queue.SimpleQueue = queue.SimpleQueue()
        window = threading.Semaphore(self.stream_max_in_flight)
        stop = threading.Event()

        def reader() -> None:
            submitted = 0
            try:
                for request in request_iterator:
                    window.acquire()
                    if stop.is_set():
                        window.release()
                        break
                    self._stream_pool.submit(self._score_one, request, deadline, out, window)
                    submitted += 1
            except Exception:  # client cancelled / RPC ended: stop reading
                pass
            finally:
                out.put((_END, submitted, None))

        threading.Thread(target=reader, name="score-stream-reader", daemon=True).start()
        done = 0
        expected: int | None = None
        try:
            while expected is None or done < expected:
                request, resp, exc = out.get()
                if request is _END:
                    expected = resp
                    continue
                done += 1
                if exc is not None:
                    stop.set()
                    code, message = grpc_status(exc)
                    context.set_trailing_metadata(((REQUEST_ID_METADATA, request.request_id),))
                    context.abort(code, f"request_id={request.request_id}: {message}")
                yield resp
        finally:
            stop.set()


# -- server ------------------------------------------------------------------------------------
@dataclass
class _Built:
    server: grpc.Server
    core: ScoringCore
    port: int
    health: health.HealthServicer
    servicer: ScoringServicer
    services: list[str]


def _import_hook(path: str) -> ProtocolHook:
    module, _, attr = path.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    if not callable(fn):
        raise TypeError(f"protocol hook {path!r} is not callable")
    return fn


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _build(settings: ScoringSettings, core: ScoringCore | None,
           protocols: Sequence[ProtocolHook]) -> _Built:
    own_core = core is None
    if core is None:
        core = ScoringCore(settings)
    try:
        workers = settings.effective_max_workers
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", settings.max_message_bytes),
                     ("grpc.max_send_message_length", settings.max_message_bytes),
                     ("grpc.so_reuseport", 0)])
        servicer = ScoringServicer(core, settings.effective_stream_max_in_flight,
                                   max(workers, settings.effective_stream_max_in_flight))
        scoring_pb2_grpc.add_ScoringServicer_to_server(servicer, server)
        services = [SCORING_SERVICE]
        for hook in [*protocols, *(_import_hook(p) for p in settings.protocols)]:
            names = hook(server, core)
            if names:
                services.extend(names)
        health_servicer = health.HealthServicer(
            experimental_non_blocking=True,
            experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for name in ("", *services):
            health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

        def on_ready() -> None:
            for name in ("", *services):
                health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

        core.add_ready_callback(on_ready)
        reflection.enable_server_reflection(
            [*services, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        address = _address(settings.host, settings.port)
        if settings.tls is not None:
            creds = grpc.ssl_server_credentials(
                [(Path(settings.tls.key_file).read_bytes(), Path(settings.tls.cert_file).read_bytes())])
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
        if not port:
            raise RuntimeError(f"could not bind {address}")
    except BaseException:
        if own_core:
            core.close()
        raise
    return _Built(server, core, port, health_servicer, servicer, services)


def build_server(settings: ScoringSettings, *, core: ScoringCore | None = None,
                 protocols: Sequence[ProtocolHook] = ()) -> tuple[grpc.Server, ScoringCore, int]:
    """A bound, **not yet started** server with Scoring, health, reflection and ``protocols``.

    Without ``core`` a :class:`ScoringCore` is created from ``settings`` and loaded (blocking)
    before the server is built; pass ``core=ScoringCore(settings, load=False)`` and call
    ``core.load()`` after ``server.start()`` to have health report NOT_SERVING while loading.
    Returns ``(server, core, port)``; the caller starts the server, and afterwards stops it and
    then closes the core: ``server.stop(grace).wait(); core.close()``.
    """
    b = _build(settings, core, protocols)
    return b.server, b.core, b.port


def _write_ready_file(path: Path, port: int) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def serve(settings: ScoringSettings, *, protocols: Sequence[ProtocolHook] = (),
          stop: threading.Event | None = None) -> None:
    """Run the server until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully.

    Order: bind and start (health NOT_SERVING) -> load and warm up every instance -> health
    SERVING -> write ``ready_file`` (the port). On the signal: health NOT_SERVING, stop
    accepting calls, give in-flight calls ``shutdown_grace_s``, close the core, remove the ready
    file. Signal handlers are installed only when called from the main thread.
    """
    stop = stop or threading.Event()
    core = ScoringCore(settings, load=False)
    b = _build(settings, core, protocols)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    ready_written = False
    try:
        b.server.start()
        log.info("%s: listening on %s (%s), loading %s", settings.service_name,
                 _address(settings.host, b.port), "tls" if settings.tls else "plaintext",
                 ", ".join(settings.model_names))
        core.load()
        if settings.ready_file is not None and not stop.is_set():
            _write_ready_file(settings.ready_file, b.port)
            ready_written = True
        log.info("%s: serving %s on port %d", settings.service_name, SCORING_SERVICE, b.port)
        while not stop.wait(0.5):
            pass
        log.info("%s: shutting down", settings.service_name)
    finally:
        b.health.enter_graceful_shutdown()
        b.server.stop(settings.shutdown_grace_s).wait()
        b.servicer.close()
        core.close()
        if ready_written:
            try:
                Path(settings.ready_file).unlink()
            except FileNotFoundError:
                pass
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["ScoringServicer", "build_server", "serve", "ProtocolHook", "SERVER_NAME",
           "SCORING_SERVICE", "REQUEST_ID_METADATA", "request_deadline"]
