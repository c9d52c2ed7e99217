"""Burst recovery time.

Definition: for a burst window ``(start_s, end_s)`` (seconds from ``origin_ms``, the
schedule's start; :attr:`Schedule.bursts` gives them):

* **baseline** = median latency of records whose output append time lies in
  ``[start_s − baseline_s, start_s)`` (the steady state right before the burst);
* **windowed median** = median latency of records whose output append time lies in a
  window ``[w, w + window_s)``; window starts step by ``step_s`` (default window_s, i.e.
  tumbling windows) from the burst end: ``w_k = end_s + k·step_s``;
* a window is **good** when it holds at least one record and
  ``|median − baseline| ≤ max(tolerance × baseline, abs_tolerance_ms)`` (``one_sided=True``:
  only ``median ≤ baseline + that limit``). ``abs_tolerance_ms`` (default 1 ms, the resolution of
  the broker's LogAppendTime) keeps a sub-millisecond baseline from demanding a precision the
  stamps do not have;
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
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["burst_recovery", "burst_recovery_detail"]


def burst_recovery_detail(output_append_ms: Any, latency_ms: Any, bursts: Sequence[tuple[float, float]],
                          window_s: float = 1.0, hold_s: float = 5.0, tolerance: float = 0.10, *,
                          baseline_s: float = 10.0, origin_ms: float | None = None,
                          step_s: float | None = None, one_sided: bool = False,
                          abs_tolerance_ms: float = 1.0) -> list[dict[str, Any]]:
    """Per burst: ``{"start_s", "end_s", "baseline_ms", "recovery_s", "reason"}``.

    ``recovery_s`` is None when the burst did not recover within the data (``reason``
    says why). ``origin_ms`` is the wall clock (ms) of the schedule's t = 0, in the same
    clock as ``output_append_ms``; default: the smallest output append time (only right
    when the first output came at t = 0 — pass it explicitly for real runs).
    """
    if not (window_s > 0 and hold_s >= window_s and tolerance >= 0 and baseline_s > 0):
        raise ValueError("need window_s > 0, hold_s >= window_s, tolerance >= 0, baseline_s > 0")
    step = float(window_s if step_s is None else step_s)
    if not step > 0:
        raise ValueError("step_s must be > 0")
    out = np.asarray(output_append_ms, dtype=np.float64)
    lat = np.asarray(latency_ms, dtype=np.float64)
    if out.shape != lat.shape:
        raise ValueError("output_append_ms and latency_ms differ in length")
    ok = np.isfinite(out) & np.isfinite(lat)
    out, lat = out[ok], lat[ok]
    results: list[dict[str, Any]] = []
    blist = sorted((float(s), float(e)) for s, e in bursts)
    if len(out) == 0:
        return [{"start_s": s, "end_s": e, "baseline_ms": None, "recovery_s": None,
                 "reason": "no records"} for s, e in blist]
    origin = float(out.min()) if origin_ms is None else float(origin_ms)
    order = np.argsort(out, kind="stable")
    t = (out[order] - origin) / 1000.0
    lat = lat[order]
    data_end = float(t[-1])
    n_hold = int(math.floor((hold_s - window_s) / step + 1e-9)) + 1  # windows inside one hold

    def med(a: float, b: float) -> float | None:
        i, j = np.searchsorted(t, [a, b], side="left")
        return float(np.median(lat[i:j])) if j > i else None

    for idx, (start, end) in enumerate(blist):
        rec: dict[str, Any] = {"start_s": start, "end_s": end, "baseline_ms": None,
                               "recovery_s": None, "reason": ""}
        results.append(rec)
        # Baseline: the base-load stretch just before this burst, never reaching back into the
        # previous burst (whose drain would inflate it).
        prev_end = blist[idx - 1][1] if idx > 0 else -math.inf
        base = med(max(start - baseline_s, prev_end), start)
        if base is None:
            rec["reason"] = f"no records in the {baseline_s:g} s before the burst (no baseline)"
            continue
        rec["baseline_ms"] = base
        next_start = blist[idx + 1][0] if idx + 1 < len(blist) else math.inf
        horizon = min(next_start, data_end)
        # candidate windows w_k = end + k*step with w_k + window <= horizon
        if end + window_s > horizon:
            rec["reason"] = "no complete window between the burst end and the data end / next burst"
            continue
        n_win = int(math.floor((horizon - end - window_s) / step + 1e-9)) + 1
        good = np.zeros(n_win, dtype=bool)
        lim = max(tolerance * base, abs_tolerance_ms)
        for k in range(n_win):
            w = end + k * step
            m = med(w, w + window_s)
            if m is None:
                continue
            good[k] = (m - base <= lim) if one_sided else (abs(m - base) <= lim)
        # first k with good[k : k + n_hold] all true
        if n_win >= n_hold:
            run = np.convolve(good.astype(np.int64), np.ones(n_hold, dtype=np.int64), mode="valid")
            hits = np.flatnonzero(run == n_hold)
        else:
            hits = np.zeros(0, dtype=np.int64)
        if len(hits):
            rec["recovery_s"] = float(hits[0] * step)
        else:
            where = "next burst" if next_start <= data_end else "end of data"
            rec["reason"] = (f"latency median did not stay within {tolerance:.0%} of the baseline "
                             f"{base:.3f} ms for {hold_s:g} s before the {where}")
    return results


def burst_recovery(output_append_ms: Any, latency_ms: Any, bursts: Sequence[tuple[float, float]],
                   window_s: float = 1.0, hold_s: float = 5.0, tolerance: float = 0.10,
                   **kwargs: Any) -> list[float | None]:
    """Recovery time (s) per burst, in burst order (sorted by start); None when the
    burst did not recover within the data. See the module docstring for the definition
    and :func:`burst_recovery_detail` for the keyword options (origin_ms, baseline_s,
    step_s, one_sided) and the reason behind each None."""
    return [r["recovery_s"] for r in burst_recovery_detail(output_append_ms, latency_ms, bursts,
                                                           window_s, hold_s, tolerance, **kwargs)]
