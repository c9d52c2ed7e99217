"""The part of the tracing wiring that needs no OpenTelemetry import: environments without the SDK
(or runs with tracing off) pay nothing and break nothing."""

from __future__ import annotations

from random import getrandbits

SPANS_DIR_ENV = "CRAYFISH_SPANS_DIR"   # the runner points it at the point's folder
TRACEPARENT = "traceparent"


def sampled_traceparent(headers) -> bool:
    """True when the headers carry a W3C traceparent whose sampled flag is set (cheap scan)."""
    if not headers:
        return False
    for k, v in headers:
        if k == TRACEPARENT and v:
            flags = v[-2:].decode("ascii", "replace") if isinstance(v, bytes) else str(v)[-2:]
            try:
                return bool(int(flags, 16) & 0x01)  # bit 0: sampled (bit 1 is W3C's "random")
            except ValueError:
                return False
    return False


_ODD_HEX = frozenset(b"13579bdfBDF")


def worker_context(headers) -> tuple[str, str, int] | None:
    """(trace id hex, incoming parent span id hex, span-id base) when the headers carry a sampled
    W3C traceparent, else None. The base gives the worker's span ids of this batch
    (observability.wiring.worker_span_ids). Costs a header scan and a slice: this runs per batch."""
    if not headers:
        return None
    for k, v in headers:
        if k == TRACEPARENT:
            if isinstance(v, str):
                v = v.encode()
            if not v or len(v) < 55 or v[54] not in _ODD_HEX:   # 00-<32 hex>-<16 hex>-<flags>
                return None
            return v[3:35].decode(), v[36:52].decode(), getrandbits(61) << 3
    return None


class _TracingOff:
    tracer = None

    def close(self) -> None:
        pass


def batch_tracing(service: str):
    """observability.wiring.BatchTracing for ``service``, or an object with ``tracer = None`` when the
    OpenTelemetry SDK is not installed in this environment."""
    try:
        from observability.wiring import BatchTracing
    except ModuleNotFoundError:
        return _TracingOff()
    return BatchTracing(service)
