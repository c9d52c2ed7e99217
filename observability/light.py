"""What a service imports for tracing, at no cost: no OpenTelemetry import here, so environments
without the SDK (or runs with tracing off) pay nothing and break nothing.

- :func:`batch_tracing` gives a service its per-batch tracing (observability.wiring.BatchTracing);
- :func:`sampled_traceparent` / :func:`worker_context` tell from the headers a service reads anyway
  whether a batch is traced (observability.context);
- ``SPANS_DIR_ENV`` is the variable the runner sets to the point's folder (span files go there).
"""

from __future__ import annotations

from observability.context import client_traceparent, sampled_traceparent, worker_context
from observability.names import SPANS_DIR_ENV, TRACEPARENT

__all__ = ["batch_tracing", "sampled_traceparent", "worker_context", "client_traceparent", "SPANS_DIR_ENV",
           "TRACEPARENT"]


class _TracingOff:
    """batch_tracing's answer where the SDK is not installed: ``tracer`` None, nothing to record."""

    tracer = None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def batch_tracing(service: str):
    """observability.wiring.BatchTracing for ``service`` (its ``tracer`` is None when tracing is off),
    or an object with ``tracer = None`` when the OpenTelemetry SDK is not installed here."""
    try:
        # The SDK (sampler, OTLP export) is optional per environment: load it only here.
        from observability.wiring import BatchTracing
    except ModuleNotFoundError:
        return _TracingOff()
    return BatchTracing(service)
