"""Jaeger v2, the trace backend of the native stack (``make up``): built from the Go module proxy by
``build.py``, run with ``config.yaml``. See docs/stack.md."""
