"""The collector service: reads output and dead-letter topics with broker timestamps, writes one
record per batch (``batches.parquet``), samples consumer lag, bounds the generator/broker clock skew."""
