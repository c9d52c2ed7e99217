"""A lean span recorder for the per-batch hot path (no OpenTelemetry import).

The OpenTelemetry SDK costs ~30 µs of CPU per span here (span object, locks, processor, exporter
conversion): five spans per batch would cost the worker more than scoring a batch. The services
therefore record their per-batch spans as plain tuples, and a background thread writes them out
every ``FLUSH_S`` (and :meth:`SpanLog.flush` on demand):

- to a spans folder (the runner sets one per point): JSON lines in
  ``<dir>/spans/<service>-<pid>.jsonl``, the format :func:`observability.hops.read_spans` reads;
- to an OTLP sink, when one is given (observability.otel.OtlpSink: the SDK's OTLP/gRPC exporter);
- to both, when both are given.

A span tuple is ``(trace_id, span_id, parent_id, name, kind, start_ns, end_ns, attributes)``: ids as
ints or as hex already, ``parent_id`` None for a root, ``kind`` one of INTERNAL, SERVER, CLIENT,
PRODUCER, CONSUMER, ``attributes`` a dict or already a JSON object string (hot spans with constant
attributes). A span-file line has exactly these fields (ids as lower-case hex) plus
``"status": "UNSET"``, ``"links": []`` and ``"service"``.

The timing of a span is what the service measured itself (its own clock, its own stamps); only the
conversion and export are deferred. Nothing here is on the path of an unsampled batch.
"""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path

from observability.names import SPANS_DIRNAME

FLUSH_S = 0.5
_LINE = ('{"trace_id":"%s","span_id":"%s","parent_id":%s,"name":%s,"kind":"%s","start_ns":%d,'
         '"end_ns":%d,"status":"UNSET","attributes":%s,"links":[],"service":%s}\n')
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def hex_id(v, width: int) -> str:
    """An id as lower-case hex of ``width`` digits (ids come as ints, or as hex already)."""
    return v if isinstance(v, str) else format(v, f"0{width}x")


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


def safe_filename(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "service"


class SpanLog:
    """Collects finished spans of one service and exports them in the background.

    ``add(trace_id, span_id, parent_id, name, kind, start_ns, end_ns, attributes)`` is all the hot
    path does (a tuple append). ``spans_dir``: the folder whose ``spans/`` subfolder gets this
    process's span file (None: no file); ``otlp``: an object with ``export(span_tuples)`` and
    ``shutdown()`` (None: no OTLP)."""

    def __init__(self, service: str, spans_dir: str | Path | None, otlp=None):
        self.service = service
        self._service_json = json.dumps(service)
        self._names: dict[str, str] = {}
        self._pending: list[tuple] = []
        self._lock = threading.Lock()
        self._otlp = otlp
        self._file = None
        if spans_dir:
            d = Path(spans_dir) / SPANS_DIRNAME
            d.mkdir(parents=True, exist_ok=True)
            self._file = open(d / f"{safe_filename(service)}-{os.getpid()}.jsonl", "a", encoding="utf-8")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"spanlog-{service}", daemon=True)
        self._thread.start()

    def add(self, trace_id: int, span_id: int, parent_id: int | None, name: str, kind: str, start_ns: int,
            end_ns: int, attributes: dict | None = None) -> None:
        self._pending.append((trace_id, span_id, parent_id, name, kind, start_ns, end_ns, attributes))

    def add_deferred(self, expand, *args) -> None:
        """Record the stamps now, build the spans at flush: ``expand(*args)`` returns span tuples.
        An ``expand`` with a ``compact`` name (observability.compact) is written to span files as
        one compact line per flush instead of one line per span."""
        self._pending.append((expand, args))

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.flush()

    def flush(self) -> None:
        """Write out everything recorded so far (the background thread calls this every FLUSH_S;
        call it yourself before a process may end without exit hooks)."""
        with self._lock:
            items, self._pending = self._pending, []
            if not items:
                return
            if self._file is not None:
                self._write_lines(items)
            if self._otlp is not None:
                spans = []
                for it in items:
                    spans.extend(it[0](*it[1]) if len(it) == 2 else (it,))
                self._otlp.export(spans)

    def _write_lines(self, items: list[tuple]) -> None:
        # Deferred items of a compact expander go out as one line per flush (one C-level json encode
        # of all their stamps); everything else as one line per span.
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
        self._file.write("".join('{"compact":"%s","service":%s,"vs":%s}\n' % (name, self._service_json, _dumps(vs))
                                 for name, vs in compact.items())
                         + "".join(self._json_line(s) for s in spans))
        self._file.flush()

    def _json_line(self, s: tuple) -> str:
        # Hand-formatted: json.dumps of the whole record costs ~4x more.
        trace_id, span_id, parent_id, name, kind, start, end, attrs = s
        enc = self._names.get(name)
        if enc is None:
            enc = self._names[name] = json.dumps(name)
        return _LINE % (hex_id(trace_id, 32), hex_id(span_id, 16),
                        f'"{hex_id(parent_id, 16)}"' if parent_id else "null", enc, kind, start, end,
                        attrs if attrs.__class__ is str else (_dumps(attrs) if attrs else "{}"), self._service_json)

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
