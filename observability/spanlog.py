"""A lean span recorder for the per-batch hot path.

The OpenTelemetry SDK costs ~30 µs of CPU per span here (span object, locks, processor, exporter
conversion): five spans per batch would cost the worker more than scoring a batch. The services
therefore record their per-batch spans as plain tuples and a background thread turns them into
spans every ``FLUSH_S``:

- with ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) set: OpenTelemetry SDK
  ``ReadableSpan`` objects handed to the SDK's OTLP/gRPC exporter (standard OTEL_EXPORTER_OTLP_* env);
- with a spans folder (the runner sets one per point): JSON lines in
  ``<dir>/spans/<service>-<pid>.jsonl`` with exactly the fields of
  :func:`observability.tracing.span_to_dict` (what observability.hops reads) — as well, when both.

Span and trace ids are W3C ids (random 128/64-bit); the sampling decision of a root span follows
the standard ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (the SDK's own sampler object);
a child follows its parent's sampled flag (parent-based), as the SDK would.

The timing of a span is what the service measured itself (its own clock, its own stamps); only the
conversion and export are deferred. Nothing here is on the path of an unsampled batch.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

FLUSH_S = 0.5
_LINE = ('{"trace_id":"%s","span_id":"%s","parent_id":%s,"name":%s,"kind":"%s","start_ns":%d,'
         '"end_ns":%d,"status":"UNSET","attributes":%s,"links":[],"service":%s}\n')
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _hex(v, width: int) -> str:
    """An id as lower-case hex of ``width`` digits (ids come as ints, or as hex already)."""
    return v if isinstance(v, str) else format(v, f"0{width}x")


def _int(v) -> int:
    return int(v, 16) if isinstance(v, str) else v


def new_span_id() -> int:
    return random.getrandbits(64) or 1


def new_trace_id() -> int:
    return random.getrandbits(128) or 1


def traceparent(trace_id: int, span_id: int, sampled: bool = True) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def parse_traceparent(value) -> tuple[int, int, bool] | None:
    """(trace_id, parent span id, sampled) of a W3C traceparent header value, or None."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    parts = str(value).strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        return int(parts[1], 16), int(parts[2], 16), bool(int(parts[3][:2], 16) & 1)
    except ValueError:
        return None


def header_value(headers, key: str = "traceparent"):
    if not headers:
        return None
    for k, v in headers:
        if k == key:
            return v
    return None


class SpanLog:
    """Collects finished spans of one service and exports them in the background.

    ``add(trace_id, span_id, parent_id, name, kind, start_ns, end_ns, attributes)`` is all the hot
    path does (a tuple append)."""

    def __init__(self, service: str, spans_dir: str | Path | None):
        from observability.tracing import SPANS_DIRNAME, _safe, _service_name

        self.service = _service_name(service)
        self._service_json = json.dumps(self.service)
        self._names: dict[str, str] = {}
        self._pending: list[tuple] = []
        self._lock = threading.Lock()
        endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                    or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        self._otlp = None
        self._file = None
        choice = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if choice != "none" and endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource

            self._otlp = OTLPSpanExporter()
            self._resource = Resource.create({SERVICE_NAME: self.service})
        # A run folder gets span files even when spans also go over OTLP (the run's hop breakdown
        # reads them); a service outside a run (the native stack) exports over OTLP only.
        if choice != "none" and spans_dir:
            d = Path(spans_dir) / SPANS_DIRNAME
            d.mkdir(parents=True, exist_ok=True)
            self._file = open(d / f"{_safe(self.service)}-{os.getpid()}.jsonl", "a", encoding="utf-8")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"spanlog-{self.service}", daemon=True)
        self._thread.start()

    def add(self, trace_id: int, span_id: int, parent_id: int | None, name: str, kind: str, start_ns: int,
            end_ns: int, attributes: dict | None = None) -> None:
        self._pending.append((trace_id, span_id, parent_id, name, kind, start_ns, end_ns, attributes))

    def add_deferred(self, expand, *args) -> None:
        """Record the stamps now, build the spans at flush: ``expand(*args)`` returns span tuples
        (trace_id, span_id, parent_id, name, kind, start_ns, end_ns, attributes); ``attributes``
        may be given already as a JSON object string (hot spans with constant attributes)."""
        self._pending.append((expand, args))

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            items, self._pending = self._pending, []
            if not items:
                return
            if self._file is not None:
                # Deferred items of a compact expander go out as one line per flush (one C-level
                # json encode of all their stamps); everything else as one line per span.
                compact: dict = {}
                spans = []
                for it in items:
                    if len(it) == 2:
                        name = getattr(it[0], "compact", None)
                        if name is not None:
                            compact.setdefault(name, []).append(it[1])
                        else:
                            spans.extend(it[0](*it[1]))
                    else:
                        spans.append(it)
                self._file.write("".join('{"compact":"%s","service":%s,"vs":%s}\n' % (name, self._service_json,
                                                                                      _dumps(vs))
                                         for name, vs in compact.items())
                                 + "".join(self._json_line(s) for s in spans))
                self._file.flush()
            if self._otlp is not None:
                spans = []
                for it in items:
                    spans.extend(it[0](*it[1]) if len(it) == 2 else (it,))
                self._otlp.export([self._readable(s) for s in spans])

    def _json_line(self, s: tuple) -> str:
        # Hand-formatted (json.dumps of the whole record costs ~4x more); same fields and JSON as
        # observability.tracing.span_to_dict.
        trace_id, span_id, parent_id, name, kind, start, end, attrs = s
        enc = self._names.get(name)
        if enc is None:
            enc = self._names[name] = json.dumps(name)
        return _LINE % (_hex(trace_id, 32), _hex(span_id, 16), f'"{_hex(parent_id, 16)}"' if parent_id else "null",
                        enc, kind, start, end,
                        attrs if attrs.__class__ is str else (_dumps(attrs) if attrs else "{}"), self._service_json)

    def _readable(self, s: tuple):
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

        trace_id, span_id, parent_id, name, kind, start, end, attrs = s
        if isinstance(attrs, str):
            attrs = json.loads(attrs)
        trace_id, span_id = _int(trace_id), _int(span_id)
        parent_id = _int(parent_id) if parent_id else None
        flags = TraceFlags(TraceFlags.SAMPLED)
        parent = SpanContext(trace_id, parent_id, is_remote=True, trace_flags=flags) if parent_id else None
        return ReadableSpan(name=name, context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags),
                            parent=parent, resource=self._resource, attributes=attrs or {},
                            kind=getattr(SpanKind, kind), start_time=int(start), end_time=int(end),
                            instrumentation_scope=InstrumentationScope("crayfish-mesh"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._otlp is not None:
            self._otlp.shutdown()
            self._otlp = None


def expand_compact(record: dict) -> list[dict]:
    """The span records (as observability.tracing.span_to_dict writes them) of one compact line:
    ``{"compact": <expander name>, "service": ..., "vs": [<arguments of one expander call>, ...]}``."""
    from observability.wiring import COMPACT_EXPANDERS

    fn = COMPACT_EXPANDERS[record["compact"]]
    out = []
    spans = [span for v in record["vs"] for span in fn(*v)]
    for trace_id, span_id, parent_id, name, kind, start, end, attrs in spans:
        out.append({"trace_id": _hex(trace_id, 32), "span_id": _hex(span_id, 16),
                    "parent_id": _hex(parent_id, 16) if parent_id else None, "name": name, "kind": kind,
                    "start_ns": int(start), "end_ns": int(end), "status": "UNSET",
                    "attributes": json.loads(attrs) if isinstance(attrs, str) else (attrs or {}),
                    "links": [], "service": record.get("service", "")})
    return out


def root_sampler():
    """The SDK's sampler from the standard env (for root spans); decisions cost ~2 µs."""
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

    return _get_from_env_or_default()


def sample_root(sampler, trace_id: int, name: str) -> bool:
    from opentelemetry.sdk.trace.sampling import Decision

    return sampler.should_sample(None, trace_id, name).decision == Decision.RECORD_AND_SAMPLE


def now_ns() -> int:
    return time.time_ns()
