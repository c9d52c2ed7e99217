"""The names tracing agrees on: span attributes, the trace header, the spans folder.

Attribute names follow the OpenTelemetry messaging and RPC semantic conventions (the old
``messaging.operation`` is set beside ``messaging.operation.type`` so older backends group spans
too); ``crayfish.*`` are ours. observability.hops reads spans by these names, so a span that should
count in the per-hop breakdown must use them (the contract is in the observability.hops docstring).
"""

from __future__ import annotations

# ---- ours ----------------------------------------------------------------------------------------
BATCH_ID = "crayfish.batch_id"              # DataBatch.batch_id, on the span or an ancestor of it
HOP = "crayfish.hop"                        # decode | score | encode | server_queue | inference

# ---- OpenTelemetry messaging conventions ---------------------------------------------------------
MESSAGING_SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
OPERATION = "messaging.operation"            # deprecated name, kept for older backends
OPERATION_TYPE = "messaging.operation.type"
PARTITION = "messaging.destination.partition.id"
OFFSET = "messaging.kafka.offset"

# ---- OpenTelemetry RPC conventions ---------------------------------------------------------------
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"

# ---- where the trace travels and where spans land ------------------------------------------------
TRACEPARENT = "traceparent"                 # W3C trace context: Kafka header, gRPC metadata, HTTP header
SPANS_DIR_ENV = "CRAYFISH_SPANS_DIR"        # the runner points it at the point's folder
SPANS_DIRNAME = "spans"                     # span files: <spans dir>/spans/<service>-<pid>.jsonl
