"""Per-hop medians from the stamps every batch carries (summary ``hops_ms``; docs/results.md).

produce = input append − created; wait = worker receive − input append; decode / score / encode
from the worker's own timers; publish = output append − worker send; e2e = output append − created;
e2e_receive = collector receive − created (the collector's clock when it polled the output: µs
resolution, meaningful when the generator and the collector share a host clock).
The broker stamps have 1 ms resolution, so produce, wait and publish are ±1 ms each and the hop
medians need not add up to the e2e median (the spans of the tracing layer do: observability.hops).

A stamp that is absent (null or 0: a pipeline of someone else's writes no worker stamps, an old
batches.parquet has no collector clock) makes every hop that needs it absent for that batch; a hop
absent from every batch is ``{"p50": None, "mean": None}``, never a difference taken from 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from services.analysis.columns import as_table, column, present

HOPS = ("produce", "wait", "decode", "score", "encode", "publish", "e2e", "e2e_receive")
NS_PER_MS = 1_000_000

# hop -> (end stamp, its unit in ns, start stamp, its unit in ns); a worker timer has no start
_SPANS: dict[str, tuple[str, int, str | None, int]] = {
    "produce": ("input_append_ms", NS_PER_MS, "created_ns", 1),
    "wait": ("worker_receive_ns", 1, "input_append_ms", NS_PER_MS),
    "decode": ("decode_ns", 1, None, 1),
    "score": ("inference_ns", 1, None, 1),
    "encode": ("encode_ns", 1, None, 1),
    "publish": ("output_append_ms", NS_PER_MS, "worker_send_ns", 1),
    "e2e": ("output_append_ms", NS_PER_MS, "created_ns", 1),
    "e2e_receive": ("collector_receive_ns", 1, "created_ns", 1),
}


def hop_values(table: pa.Table, hop: str, rows: np.ndarray) -> np.ndarray:
    """The hop's values (ms) over ``rows`` (a bool mask) where every stamp it needs is present;
    differences are taken in integer ns, so epoch stamps lose nothing."""
    end, end_unit, start, start_unit = _SPANS[hop]
    e, ok = present(table, end)
    diff = e * end_unit
    if start is not None:
        s, s_ok = present(table, start)
        ok = ok & s_ok
        diff = diff - s * start_unit
    keep = rows & ok
    return diff[keep] / NS_PER_MS


def stamp_hops(data: pa.Table | Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """``{hop: {"p50", "mean"}}`` in ms over the scored batches the generator sent ({} when none);
    ``None`` for a hop whose stamps are absent from every such batch."""
    table = as_table(data)
    status, _ = column(table, "status")
    sent, _ = column(table, "sent")
    ok = sent & (status == "scored")
    if not ok.any():
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for hop in HOPS:
        v = hop_values(table, hop, ok)
        out[hop] = {"p50": float(np.median(v)), "mean": float(np.mean(v))} if len(v) else {"p50": None, "mean": None}
    return out
