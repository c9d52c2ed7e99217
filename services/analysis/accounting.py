"""Accounting of one repetition (docs/results.md): where every batch the generator sent ended.

Input: the collector's ``batches.parquet`` — one row per batch. Rows with ``sent`` true are the
batches the broker acknowledged to the generator; each ends ``scored``, ``dead_lettered`` or
``missing``, and ``duplicates`` counts the extra copies of it the collector read (at-least-once
redelivery: the first copy is the one whose latency counts). Rows with ``sent`` false are records on
the output or dead-letter topics the generator did not send (``not_sent``); of those, ``unmatched`` counts the outputs that carried no
ids and whose echo key matched no sent batch (``services.collector.batches``: a pipeline that drops
crayfish-json's headers and changed what it echoes, or records of another run). The prediction check
(``checked`` / ``wrong``) comes from the collector's report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from services.analysis.columns import as_table, column

STATUSES = ("scored", "dead_lettered", "missing")


def account(data: pa.Table | Mapping[str, Any], predictions: Mapping[str, Any] | None = None) -> dict[str, int]:
    """``{sent, scored, dead_lettered, missing, duplicates, not_sent, unmatched, checked, wrong}``."""
    table = as_table(data)
    sent, _ = column(table, "sent")
    status, _ = column(table, "status")
    dups, _ = column(table, "duplicates")
    acc = {"sent": int(sent.sum())}
    for name in STATUSES:
        acc[name] = int((sent & (status == name)).sum())
    acc["duplicates"] = int(dups[sent].sum())
    acc["not_sent"] = int((~sent).sum())
    echo, _ = column(table, "echo_key", default="")   # tables from before the echo key: no such rows
    acc["unmatched"] = int((~sent & (echo != "")).sum())
    acc["checked"] = int((predictions or {}).get("checked", 0))
    acc["wrong"] = int((predictions or {}).get("wrong", 0))
    return acc


def accounting_reasons(acc: Mapping[str, int]) -> list[str]:
    """Why the accounting makes a point invalid: batches missing or dead-lettered, outputs that match
    no sent batch, predictions that differ from the reference model."""
    reasons = []
    if acc["missing"]:
        reasons.append(f"{acc['missing']} batch(es) missing")
    if acc["dead_lettered"]:
        reasons.append(f"{acc['dead_lettered']} batch(es) dead-lettered")
    if acc.get("unmatched"):
        reasons.append(f"{acc['unmatched']} output(s) without ids matched no sent batch")
    if acc["wrong"]:
        reasons.append(f"{acc['wrong']} of {acc['checked']} checked predictions differ from the reference model")
    return reasons
