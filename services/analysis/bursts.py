"""Burst recovery time.

Definition: for a burst window ``(start_s, end_s)`` (seconds from ``origin_ms``, the
schedule's start; :attr:`Schedule.bursts` gives them):

* **baseline** = median latency of records whose output append time lies in
  ``[start_s − baseline_s, start_s)`` (the steady state right before the burst);
* **windowed median** = median latency of records whose output append time lies in a
  window ``[w, w + window_s)``; window starts step by ``step_s`` (default window_s, i.e.
  tumbling windows) from the burst end: ``w_k = end_s + k·step_s``;
* a window is **good** when it holds at least one record and
  ``median ≤ baseline + max(tolerance × baseline, abs_tolerance_ms)``: one-sided, a latency
  *below* the baseline is recovered too. ``abs_tolerance_ms`` (1 ms, the resolution of the broker's
  LogAppendTime) keeps a sub-millisecond baseline from demanding a precision the stamps do not
  have;
* **recovery time** = ``k·step_s`` for the first k such that every window starting in
  ``[w_k, w_k + hold_s − window_s]`` is good — the windowed median stays within tolerance
  for ``hold_s`` seconds. 0 means the burst never disturbed the latency beyond tolerance.

The hold must fit before the next burst starts and before the data ends (last output
append time); otherwise the burst has **not recovered within the data** and the result
is None (with the reason in :func:`burst_recovery_detail`). An empty window counts as
not good (no evidence of recovery), so choose ``window_s`` well above the inter-arrival
time. Resolution of the result is ``step_s``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from services.analysis.columns import as_table, column
from services.analysis.stats import latency_ms as latency_ms_of

__all__ = ["burst_recovery", "burst_recovery_detail", "point_bursts"]


class _Trace:
    """Latencies ordered by output time ``t`` (s from the origin), with window medians."""

    def __init__(self, output_append_ms: Any, latency_ms: Any, origin_ms: float):
        out, lat = np.asarray(output_append_ms), np.asarray(latency_ms)
        if out.shape != lat.shape:
            raise ValueError("output_append_ms and latency_ms differ in length")
        ok = np.isfinite(out) & np.isfinite(lat)
        order = np.argsort(out[ok])  # equal output times fall in the same windows: order is free
        self.t = (out[ok][order] - origin_ms) / 1000.0
        self.lat = lat[ok][order]

    def median(self, a: float, b: float) -> float | None:
        """Median latency of the records with ``a ≤ t < b`` (None when there are none)."""
        i, j = np.searchsorted(self.t, [a, b])
        return float(np.median(self.lat[i:j])) if j > i else None


def burst_recovery_detail(output_append_ms: Any, latency_ms: Any, bursts: Sequence[tuple[float, float]], *,
                          window_s: float, hold_s: float, tolerance: float, baseline_s: float,
                          abs_tolerance_ms: float, origin_ms: float, step_s: float | None = None
                          ) -> list[dict[str, Any]]:
    """Per burst: ``{"start_s", "end_s", "baseline_ms", "recovery_s", "reason"}``.

    ``recovery_s`` is None when the burst did not recover within the data (``reason``
    says why). ``origin_ms`` is the wall clock (ms) of the schedule's t = 0, in the same
    clock as ``output_append_ms``.
    """
    step = window_s if step_s is None else step_s
    if not (window_s > 0 and hold_s >= window_s and tolerance >= 0 and baseline_s > 0 and step > 0):
        raise ValueError("burst rule needs window_s > 0, hold_s >= window_s, tolerance >= 0, baseline_s > 0, "
                         "step_s > 0")
    trace = _Trace(output_append_ms, latency_ms, origin_ms)
    spans = sorted((float(s), float(e)) for s, e in bursts)
    rule = _Rule(window_s, hold_s, tolerance, abs_tolerance_ms, baseline_s, step)
    return [_recovery(trace, spans, i, rule) for i in range(len(spans))]


class _Rule(NamedTuple):
    window_s: float
    hold_s: float
    tolerance: float
    abs_tolerance_ms: float
    baseline_s: float
    step_s: float


def _recovery(trace: _Trace, spans: list[tuple[float, float]], i: int, rule: _Rule) -> dict[str, Any]:
    start, end = spans[i]
    rec: dict[str, Any] = {"start_s": start, "end_s": end, "baseline_ms": None, "recovery_s": None, "reason": ""}
    if len(trace.t) == 0:
        return {**rec, "reason": "no records"}
    # The baseline: the base-load stretch just before this burst, never reaching back into the
    # previous burst (whose drain would inflate it).
    prev_end = spans[i - 1][1] if i > 0 else -math.inf
    base = trace.median(max(start - rule.baseline_s, prev_end), start)
    if base is None:
        return {**rec, "reason": f"no records in the {rule.baseline_s:g} s before the burst (no baseline)"}
    rec["baseline_ms"] = base
    data_end = float(trace.t[-1])
    next_start = spans[i + 1][0] if i + 1 < len(spans) else math.inf
    horizon = min(next_start, data_end)
    # Windows w_k = end + k·step that end by the horizon; the hold needs n_hold of them in a row.
    n_win = math.floor((horizon - end - rule.window_s) / rule.step_s + 1e-9) + 1
    if n_win < 1:
        return {**rec, "reason": "no complete window between the burst end and the data end / next burst"}
    n_hold = math.floor((rule.hold_s - rule.window_s) / rule.step_s + 1e-9) + 1
    limit = base + max(rule.tolerance * base, rule.abs_tolerance_ms)
    run = 0
    for k in range(n_win):
        w = end + k * rule.step_s
        m = trace.median(w, w + rule.window_s)
        run = run + 1 if m is not None and m <= limit else 0
        if run == n_hold:
            return {**rec, "recovery_s": (k + 1 - n_hold) * rule.step_s}
    where = "next burst" if next_start <= data_end else "end of data"
    return {**rec, "reason": f"latency median did not stay within {rule.tolerance:.0%} of the baseline "
                             f"{base:.3f} ms for {rule.hold_s:g} s before the {where}"}


def burst_recovery(output_append_ms: Any, latency_ms: Any, bursts: Sequence[tuple[float, float]],
                   **rule: Any) -> list[float | None]:
    """Recovery time (s) per burst, in burst order; None when the burst did not recover within
    the data. Keyword arguments as :func:`burst_recovery_detail`."""
    return [r["recovery_s"] for r in burst_recovery_detail(output_append_ms, latency_ms, bursts, **rule)]


def point_bursts(data: pa.Table | Mapping[str, Any], bursts: Sequence[tuple[float, float]], *,
                 origin_ms: float, **rule: Any) -> list[dict[str, Any]]:
    """Burst recovery of one repetition, as the runner reports it: over every scored batch the
    generator sent (warm-up included: a burst can come early), latency from creation, windows of
    output append time from the schedule's origin. ``rule``: window_s, hold_s, tolerance,
    baseline_s, abs_tolerance_ms (the experiment's ``bursts`` settings)."""
    table = as_table(data)
    status, _ = column(table, "status")
    sent, _ = column(table, "sent")
    created, has_created = column(table, "created_ns")
    out_ms, _ = column(table, "output_append_ms")  # a scored batch has one
    ok = sent & (status == "scored") & has_created
    return burst_recovery_detail(out_ms[ok], latency_ms_of(out_ms[ok], created[ok]), bursts,
                                 origin_ms=origin_ms, **rule)
