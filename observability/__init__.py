"""Tracing for Crayfish services: OpenTelemetry set up from the standard OTEL_* env only
(``tracing``), W3C trace context through Kafka headers with messaging-convention spans
(``kafka_context``), and the per-hop breakdown of a run from span files + batches.parquet (``hops``).

Integration, a few lines per service (service name = folder name)::

    from observability import setup_tracing, shutdown_tracing, producer_span, consumer_span, hop_span, BATCH_ID
    tracer = setup_tracing("generator", run_dir)
"""

from observability.hops import HOP, hop_breakdown, hop_span, record_hop
from observability.kafka_context import (BATCH_ID, consumer_span, extract_context, inject_headers,
                                         producer_span)
from observability.tracing import force_flush, get_tracer, setup_tracing, shutdown_tracing

__all__ = ["setup_tracing", "shutdown_tracing", "get_tracer", "force_flush", "inject_headers",
           "extract_context", "producer_span", "consumer_span", "hop_span", "record_hop",
           "hop_breakdown", "BATCH_ID", "HOP"]
