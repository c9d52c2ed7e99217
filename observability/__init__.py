"""Tracing for Crayfish services: which hop of a batch took the time (docs/tracing.md).

The one API the services use is :mod:`observability.light` (re-exported here); it imports no
OpenTelemetry code, so importing it costs nothing in any environment::

    from observability.light import batch_tracing, sampled_traceparent, worker_context
    tracing = batch_tracing("generator")        # service name = folder name
    ...
    tracing.close()                             # flush the spans before exit

The per-hop breakdown of a finished run (span files + batches.parquet) is
:func:`observability.hops.hop_breakdown` (numpy and pyarrow: the core environment).

Modules, lowest first: ``names`` (attribute and header names), ``context`` (W3C trace context in
headers, the worker's span ids), ``spanlog`` (the lean span recorder and span files), ``compact``
(compact span-file lines), ``otel`` (the SDK: sampler, service name, OTLP export), ``wiring``
(what each service records), ``light`` (the services' entry point), ``hops`` (the breakdown).
"""

from observability.light import (SPANS_DIR_ENV, TRACEPARENT, batch_tracing, client_traceparent, sampled_traceparent,
                                 worker_context)

__all__ = ["batch_tracing", "sampled_traceparent", "worker_context", "client_traceparent", "SPANS_DIR_ENV",
           "TRACEPARENT"]
