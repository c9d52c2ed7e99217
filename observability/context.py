"""W3C trace context in the headers a service reads anyway, and the worker's span ids.

No OpenTelemetry import and no allocation for an unsampled batch: this runs per batch on every
hot path (generator, worker, collector). ``traceparent`` is ``00-<32 hex trace id>-<16 hex parent
span id>-<2 hex flags>``; bit 0 of the flags is "sampled".
"""

from __future__ import annotations

from random import getrandbits

from observability.names import TRACEPARENT


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
    (:func:`worker_span_ids`). Costs a header scan and a slice: this runs per batch."""
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


def worker_span_ids(base: int) -> tuple[int, int, int, int, int]:
    """The worker's five span ids of one batch from one random base: process, decode, score (the
    client span of an external call), encode, send. One random draw per batch, all distinct."""
    return base | 1, base | 2, base | 3, base | 4, base | 5


def client_traceparent(ctx: tuple[str, str, int]) -> str:
    """traceparent of the worker's score (client) span, for the call's gRPC metadata / HTTP header;
    ``ctx`` is :func:`worker_context` of the input record."""
    return f"00-{ctx[0]}-{worker_span_ids(ctx[2])[2]:016x}-01"


def send_traceparent(ctx: tuple[str, str, int]) -> bytes:
    """traceparent of the worker's send span: the output record's header, so the trace runs on to
    the collector."""
    return b"00-%s-%016x-01" % (ctx[0].encode(), worker_span_ids(ctx[2])[4])
