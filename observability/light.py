"""The part of the tracing wiring that needs no OpenTelemetry import: environments without the SDK
(or runs with tracing off) pay nothing and break nothing."""

from __future__ import annotations

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
