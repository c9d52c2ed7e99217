"""OpenTelemetry setup for every Crayfish service, configured only from the standard OTEL_* env.

    from observability import setup_tracing, shutdown_tracing
    tracer = setup_tracing("generator", run_dir)      # service name = folder name
    ...
    shutdown_tracing()                                # flush before exit (also runs at exit)

What the environment decides (nothing else is read):

- ``OTEL_SDK_DISABLED=true``: a no-op tracer, no files, no threads.
- ``OTEL_SERVICE_NAME`` (or ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``): overrides the name
  passed in; ``OTEL_RESOURCE_ATTRIBUTES`` adds resource attributes.
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: read by the SDK (default parentbased_always_on).
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: spans go over OTLP/gRPC
  (the exporter reads its own OTEL_EXPORTER_OTLP_* settings: headers, insecure, timeout...).
- without an endpoint: spans go to ``<run_dir>/spans/<service>-<pid>.jsonl`` (one JSON object a line,
  see ``JsonlSpanExporter``), which ``observability.hops`` reads; without a run_dir they are
  recorded (so trace context still propagates) but exported nowhere.
- ``OTEL_TRACES_EXPORTER=none``: no exporter at all (spans still propagate context).
- ``OTEL_BSP_*``: the BatchSpanProcessor's queue / batch / delay settings.
- ``OTEL_PROPAGATORS``: which propagators ``observability.kafka_context`` uses (default W3C
  tracecontext + baggage).

Spans are exported by a BatchSpanProcessor (a background thread), so the cost on the hot path is
building the span and a queue append.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

__all__ = ["setup_tracing", "shutdown_tracing", "get_tracer", "force_flush", "JsonlSpanExporter", "span_file_dir",
           "tracing_enabled"]

SPANS_DIRNAME = "spans"
INSTRUMENTATION_NAME = "crayfish"

_lock = threading.Lock()
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None
_global_set = False


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def span_file_dir(run_dir: Path | str) -> Path:
    """Where the span files of a run directory live."""
    return Path(run_dir) / SPANS_DIRNAME


class JsonlSpanExporter(SpanExporter):
    """One JSON object per finished span, one span per line, in ``<dir>/<service>-<pid>.jsonl``.

    Fields: trace_id, span_id, parent_id (hex, parent_id null for a root), name, kind
    (INTERNAL/SERVER/CLIENT/PRODUCER/CONSUMER), start_ns, end_ns (wall clock, ns), status, attributes,
    links ([{trace_id, span_id}]), service. A process that forks after setup writes its own file
    (the file is chosen by the pid at export time).
    """

    def __init__(self, directory: Path | str, service: str):
        self.directory = Path(directory)
        self.service = service
        self._lock = threading.Lock()
        self._fh = None
        self._pid = None

    @property
    def path(self) -> Path:
        return self.directory / f"{_safe(self.service)}-{os.getpid()}.jsonl"

    def _file(self):
        pid = os.getpid()
        if self._fh is None or self._pid != pid:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open; closed at shutdown)
            self._pid = pid
        return self._fh

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(span_to_dict(s, self.service), separators=(",", ":")) for s in spans]
        try:
            with self._lock:
                fh = self._file()
                fh.write("\n".join(lines) + "\n")
                fh.flush()
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._fh is not None and self._pid == os.getpid():
                self._fh.close()
            self._fh = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            if self._fh is not None:
                self._fh.flush()
        return True


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "service"


def span_to_dict(span: ReadableSpan, service: str) -> dict:
    ctx = span.context
    parent = span.parent
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent is not None else None,
        "name": span.name,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {k: _jsonable(v) for k, v in (span.attributes or {}).items()},
        "links": [{"trace_id": format(l.context.trace_id, "032x"), "span_id": format(l.context.span_id, "016x")}
                  for l in (span.links or ())],
        "service": service,
    }


def _jsonable(v):
    if isinstance(v, (tuple, list)):
        return list(v)
    return v


def _service_name(default: str) -> str:
    # Resource.create({}) applies OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the SDK's fallback
    # ("unknown_service...") means neither named the service, so the folder name given is used.
    detected = str(Resource.create({}).attributes.get(SERVICE_NAME, ""))
    return default if (not detected or detected.startswith("unknown_service")) else detected


def tracing_enabled() -> bool:
    """False when OTEL_SDK_DISABLED=true."""
    return not _env_true("OTEL_SDK_DISABLED")


def setup_tracing(service_name: str, run_dir: Path | str | None = None) -> trace.Tracer:
    """Configure tracing for this process once and return its tracer (later calls return the same).

    See the module docstring for the env vars. The provider also becomes the process-global one
    (``opentelemetry.trace.get_tracer_provider()``) the first time, so instrumentation libraries
    pick it up.
    """
    global _provider, _tracer, _global_set
    with _lock:
        if _tracer is not None:
            return _tracer
        if not tracing_enabled():
            _tracer = trace.NoOpTracer()
            return _tracer
        name = _service_name(service_name)
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))  # sampler from env
        exporter_choice = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                    or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        exporter: SpanExporter | None = None
        if exporter_choice == "none":
            exporter = None
        elif endpoint:
            try:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            except ImportError:  # exporter not installed: fall back to the span file
                OTLPSpanExporter = None
            if OTLPSpanExporter is not None:
                exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* itself
        if exporter is None and exporter_choice != "none" and run_dir is not None:
            exporter = JsonlSpanExporter(span_file_dir(run_dir), name)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_* from env
        if not _global_set:
            trace.set_tracer_provider(provider)
            _global_set = True
        _provider = provider
        _tracer = provider.get_tracer(INSTRUMENTATION_NAME)
        return _tracer


def get_tracer() -> trace.Tracer:
    """The tracer set up by ``setup_tracing`` (a no-op tracer before it)."""
    return _tracer if _tracer is not None else trace.NoOpTracer()


def shutdown_tracing() -> None:
    """Flush and close the exporters; the next ``setup_tracing`` configures afresh (tests rely on it).

    The process-global provider stays the first one set (the OpenTelemetry API allows one per process);
    a re-setup's tracer is returned by ``setup_tracing``/``get_tracer``, use that."""
    global _provider, _tracer
    with _lock:
        if _provider is not None:
            _provider.force_flush()
            _provider.shutdown()
        _provider = None
        _tracer = None


def force_flush(timeout_millis: int = 30000) -> bool:
    """Export what is queued now (e.g. before reading the span files in the same process)."""
    p = _provider
    return p.force_flush(timeout_millis) if p is not None else True
