"""The OpenTelemetry SDK where the lean recorder needs it: the service name and the root sampler
from the standard OTEL_* env, and the OTLP export of recorded span tuples.

Only observability.wiring imports this module, and only when a service sets up its tracing
(observability.light.batch_tracing): importing the rest of observability never loads the SDK, and
an environment without the SDK gets no tracing instead of an ImportError.
"""

from __future__ import annotations

import json
import os

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import Decision, Sampler, _get_from_env_or_default
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

INSTRUMENTATION_SCOPE = InstrumentationScope("crayfish-mesh")


def service_name(default: str) -> str:
    """``OTEL_SERVICE_NAME`` (or ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``), else ``default``."""
    # Resource.create({}) applies both variables; the SDK's fallback ("unknown_service...") means
    # neither named the service.
    detected = str(Resource.create({}).attributes.get(SERVICE_NAME, ""))
    return default if (not detected or detected.startswith("unknown_service")) else detected


def otlp_endpoint() -> str | None:
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")


def root_sampler() -> Sampler:
    """The SDK's sampler from ``OTEL_TRACES_SAMPLER`` / ``_ARG`` (for root spans); decisions cost ~2 µs."""
    return _get_from_env_or_default()


def sample_root(sampler: Sampler, trace_id: int, name: str) -> bool:
    return sampler.should_sample(None, trace_id, name).decision == Decision.RECORD_AND_SAMPLE


def _int_id(v) -> int:
    return int(v, 16) if isinstance(v, str) else v


class OtlpSink:
    """Span tuples (observability.spanlog) to the SDK's OTLP/gRPC exporter, which reads its own
    OTEL_EXPORTER_OTLP_* settings (endpoint, headers, insecure, timeout...)."""

    def __init__(self, service: str):
        # The OTLP exporter (grpc + its protos) is installed in the core environment only.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        self._exporter = OTLPSpanExporter()
        self._resource = Resource.create({SERVICE_NAME: service})

    def export(self, spans: list[tuple]) -> None:
        self._exporter.export([self._readable(s) for s in spans])

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def _readable(self, s: tuple) -> ReadableSpan:
        trace_id, span_id, parent_id, name, kind, start, end, attrs = s
        if isinstance(attrs, str):
            attrs = json.loads(attrs)
        trace_id, span_id = _int_id(trace_id), _int_id(span_id)
        flags = TraceFlags(TraceFlags.SAMPLED)
        parent = (SpanContext(trace_id, _int_id(parent_id), is_remote=True, trace_flags=flags)
                  if parent_id else None)
        return ReadableSpan(name=name, context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags),
                            parent=parent, resource=self._resource, attributes=attrs or {},
                            kind=getattr(SpanKind, kind), start_time=int(start), end_time=int(end),
                            instrumentation_scope=INSTRUMENTATION_SCOPE)
