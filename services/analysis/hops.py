"""Per-hop medians from the stamps every batch carries (summary ``hops_ms``; docs/results.md).

produce = input append − created; wait = worker receive − input append; decode / score / encode
from the worker's own timers; publish = output append − worker send; e2e = output append − created.
The broker stamps have 1 ms resolution, so produce, wait and publish are ±1 ms each and the hop
medians need not add up to the e2e median (the spans of the tracing layer do: observability.hops).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from services.analysis.columns import as_table, column
from services.analysis.stats import latency_ms

HOPS = ("produce", "wait", "decode", "score", "encode", "publish", "e2e")


def stamp_hops(data: pa.Table | Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{hop: {"p50", "mean"}}`` in ms over the scored batches the generator sent ({} when none)."""
    table = as_table(data)
    status, _ = column(table, "status")
    sent, _ = column(table, "sent")
    ok = sent & (status == "scored")
    if not ok.any():
        return {}

    def col(name: str) -> np.ndarray:
        return column(table, name)[0][ok]

    created, inp, out = col("created_ns"), col("input_append_ms"), col("output_append_ms")
    hops = {"produce": latency_ms(inp, created),
            "wait": (col("worker_receive_ns") - inp * 1_000_000) / 1e6,
            "decode": col("decode_ns") / 1e6, "score": col("inference_ns") / 1e6, "encode": col("encode_ns") / 1e6,
            "publish": latency_ms(out, col("worker_send_ns")), "e2e": latency_ms(out, created)}
    return {k: {"p50": float(np.median(hops[k])), "mean": float(np.mean(hops[k]))} for k in HOPS}
