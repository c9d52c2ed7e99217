"""One measured point: validity verdict and the point summary (the result schema).

Record classes (over the collector's per-batch table):

* **warm-up** rows: see :func:`services.analysis.stats.warmup_mask` (first 25 % in output
  order by default, or ``warmup_window_s`` seconds from the first created);
* **measured** rows: all the others;
* **kept** rows: measured rows with ``status == "scored"``, not ``duplicate`` and with both
  ``created_ns`` and ``output_append_ms`` present. Latency, throughput, timeline and the
  measured window use kept rows only.

Accounting covers the whole run (warm-up included): scored / dead_lettered count distinct
batches (rows not flagged ``duplicate``), duplicates count the flagged rows, and
``missing = sent − scored − dead_lettered`` when ``sent`` is known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from services.analysis.stats import (
    column,
    latency_stats,
    output_rate_bps,
    throughput_bps,
    timeline,
    warmup_mask,
    _has,
    _nrows,
)
from services.analysis.sustain import is_sustainable, lag_trend, normalize_slo

__all__ = ["Verdict", "check_validity", "summarize_point", "input_rate"]

NAN = float("nan")


class Verdict(NamedTuple):
    valid: bool
    reasons: list[str]


def check_validity(*, window_s: float, kept_count: int, min_duration_s: float = 10.0,
                   min_count: int = 100, achieved_rate: float | None = None,
                   reference_rate: float | None = None, rate_tolerance: float = 0.02,
                   missing: int | None = None, dead_lettered: int = 0,
                   allow_dead_letters: bool = False) -> Verdict:
    """Validity of a measured point; every failed rule adds one reason.

    Rules: measured window ≥ ``min_duration_s`` seconds; kept records ≥ ``min_count``;
    ``|achieved_rate − reference_rate| ≤ rate_tolerance × reference_rate`` (only when
    both are known); ``missing == 0`` (when known; negative also reported, it means the
    accounting does not add up); no dead-lettered batches unless ``allow_dead_letters``.
    """
    reasons: list[str] = []
    if kept_count == 0:
        reasons.append("no kept records after warm-up")
    if not (window_s is not None and math.isfinite(window_s) and window_s >= min_duration_s):
        shown = f"{window_s:.3f}" if window_s is not None and math.isfinite(window_s) else "n/a"
        reasons.append(f"measured window {shown} s < minimum {min_duration_s:g} s")
    if kept_count < min_count:
        reasons.append(f"kept records {kept_count} < minimum {min_count}")
    if reference_rate is not None and math.isfinite(reference_rate) and reference_rate > 0:
        if achieved_rate is None or not math.isfinite(achieved_rate):
            reasons.append(f"achieved input rate unknown (target {reference_rate:.3f}/s)")
        elif abs(achieved_rate - reference_rate) > rate_tolerance * reference_rate:
            reasons.append(f"achieved input rate {achieved_rate:.3f}/s off target {reference_rate:.3f}/s "
                           f"by more than {rate_tolerance:.0%}")
    if missing is not None:
        if missing > 0:
            reasons.append(f"{missing} batch(es) missing")
        elif missing < 0:
            reasons.append(f"accounting mismatch: scored + dead-lettered exceeds sent by {-missing}")
    if dead_lettered and not allow_dead_letters:
        reasons.append(f"{dead_lettered} batch(es) dead-lettered")
    return Verdict(not reasons, reasons)


def input_rate(times_ns: np.ndarray) -> float:
    """Rate of a set of send stamps: ``(n − 1) / (max − min)`` per second (the number of
    intervals over the span, exact for evenly spaced sends); NaN for n < 2 or no span."""
    t = np.asarray(times_ns)
    if len(t) < 2:
        return NAN
    span = (int(t.max()) - int(t.min())) if t.dtype.kind in "iu" else float(t.max() - t.min())
    return (len(t) - 1) / (span / 1e9) if span > 0 else NAN


def _latency_ms(out_ms: np.ndarray, start_ns: np.ndarray) -> np.ndarray:
    if out_ms.dtype.kind in "iu" and start_ns.dtype.kind in "iu":
        return (out_ms.astype(np.int64) * 1_000_000 - start_ns.astype(np.int64)) / 1e6
    return (out_ms.astype(np.float64) * 1e6 - start_ns.astype(np.float64)) / 1e6


def summarize_point(table: Any, params: Mapping[str, Any] | None = None, *,
                    target_rate: float | None = None,
                    warmup: float | None = 0.25, warmup_window_s: float | None = None,
                    min_duration_s: float = 10.0, min_count: int = 100, rate_tolerance: float = 0.02,
                    slo: Any = None, lag_samples: Any = None, trim_lag_to_window: bool = True,
                    sent: int | None = None, accounting: Mapping[str, Any] | None = None,
                    allow_dead_letters: bool = False, rate_fraction: float = 0.98,
                    lag_rel_tolerance: float = 0.01, timeline_bin_s: float = 1.0) -> dict[str, Any]:
    """Summarise one run (a pyarrow Table or mapping of arrays from the collector).

    Columns used: ``created_ns``, ``output_append_ms`` (required); ``intended_ns``,
    ``status`` (default all "scored"), ``duplicate`` (default False) when present.

    Arguments: ``warmup`` = warm-up fraction (None/0 = none) unless ``warmup_window_s``
    is given; ``target_rate`` (batches/s) = the constant rate the point was run at — it
    is the reference of the input-rate validity check and enables the sustainability
    verdict. Without it (bursty, ramp, poisson, closed loop) the input-rate check uses the
    schedule's own rate over the measured records, ``(n − 1) / span(intended_ns)``.
    ``slo``: ``{"p99": 50.0}`` or ``("p99", 50.0)``, checked on latency (from created).
    ``lag_samples``: ``(t_s, lag)`` pairs with t in Unix seconds; with
    ``trim_lag_to_window`` only samples inside the measured window
    ``[min created, max output_append]`` of the kept records are used.
    ``sent``: batches the generator sent; ``accounting`` overrides any accounting key.

    Returns the point schema::

        {params, throughput_bps, output_rate_bps, latency_ms{p50 p90 p95 p99 p999 max mean count},
         latency_from_schedule_ms{...}, send_delay_ms{...},
         accounting{sent scored dead_lettered missing duplicates},
         measured{count window_s start_ns end_ms input_rate_bps schedule_rate_bps target_rate},
         valid, reasons, timeline{origin_ms bin_s counts rate_per_s},
         warmup{policy fraction window_s count kept latency_ms{...}},
         lag{...} | None, sustainable{ok reasons ...} | None}

    ``latency_from_schedule_ms`` uses kept rows with ``intended_ns > 0`` only (closed loop:
    intended = created, so it equals latency); ``send_delay_ms`` = created − intended on the
    same rows (how late the generator sent). Undefined statistics are NaN.
    """
    n = _nrows(table)
    created, created_ok = column(table, "created_ns")
    out_ms, out_ok = column(table, "output_append_ms")
    if _has(table, "intended_ns"):
        intended, intended_ok = column(table, "intended_ns")
        intended_ok &= intended > 0
    else:
        intended, intended_ok = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    status, status_ok = column(table, "status", default="scored")
    dup, dup_ok = column(table, "duplicate", default=False)
    dup = dup.astype(bool) & dup_ok
    scored = (status == "scored") & status_ok
    dead = (status == "dead_lettered") & status_ok

    # accounting (whole run)
    acc: dict[str, Any] = {
        "sent": int(sent) if sent is not None else None,
        "scored": int((scored & ~dup).sum()),
        "dead_lettered": int((dead & ~dup).sum()),
        "missing": None,
        "duplicates": int(dup.sum()),
    }
    if sent is not None:
        acc["missing"] = int(sent) - acc["scored"] - acc["dead_lettered"]
    if accounting:
        acc.update({k: v for k, v in accounting.items()})
        if "missing" not in accounting and acc.get("sent") is not None:
            acc["missing"] = int(acc["sent"]) - int(acc["scored"]) - int(acc["dead_lettered"])

    # warm-up split
    fraction = warmup if warmup_window_s is None else None
    warm = warmup_mask(table, fraction, warmup_window_s)
    measured = ~warm
    usable = created_ok & out_ok & scored & ~dup
    kept = measured & usable
    warm_kept = warm & usable

    k_created, k_out = created[kept], out_ms[kept]
    lat = _latency_ms(k_out, k_created)
    sched_rows = kept & intended_ok
    lat_sched = _latency_ms(out_ms[sched_rows], intended[sched_rows])
    send_delay = (created[sched_rows] - intended[sched_rows]) / 1e6
    lat_stats = latency_stats(lat)
    thr = throughput_bps(k_created, k_out)
    out_rate = output_rate_bps(k_created, k_out, created[usable], out_ms[usable])
    if len(k_created):
        start_ns = int(k_created.min()) if k_created.dtype.kind in "iu" else float(k_created.min())
        end_ms = int(k_out.max()) if k_out.dtype.kind in "iu" else float(k_out.max())
        window_s = (end_ms * 1e6 - start_ns) / 1e9
    else:
        start_ns, end_ms, window_s = None, None, NAN

    # Input rate over ALL distinct batches the generator sent (any status): whether it held its
    # schedule. Not over the measured subset: warm-up is cut in output order, and with several
    # partitions draining unevenly that subset mixes early- and late-created batches.
    m_rows = created_ok & ~dup
    achieved = input_rate(created[m_rows])
    m_sched = m_rows & intended_ok
    schedule_rate = input_rate(intended[m_sched])
    reference = target_rate if target_rate is not None else (schedule_rate if m_sched.any() else None)

    missing = acc.get("missing")
    verdict = check_validity(
        window_s=window_s, kept_count=int(kept.sum()), min_duration_s=min_duration_s,
        min_count=min_count, achieved_rate=achieved, reference_rate=reference,
        rate_tolerance=rate_tolerance, missing=None if missing is None else int(missing),
        dead_lettered=int(acc.get("dead_lettered") or 0), allow_dead_letters=allow_dead_letters)

    # lag samples, trimmed to the measured window
    lag_used = None
    if lag_samples is not None and len(lag_samples):
        arr = np.asarray(lag_samples, dtype=np.float64).reshape(-1, 2)
        if trim_lag_to_window and start_ns is not None:
            lo, hi = start_ns / 1e9, end_ms / 1e3
            arr = arr[(arr[:, 0] >= lo) & (arr[:, 0] <= hi)]
        lag_used = arr
    lag_info = None
    if lag_used is not None:
        lag_info = lag_trend(lag_used, rate=target_rate, rel_tolerance=lag_rel_tolerance).as_dict()

    sustain = None
    if target_rate is not None:
        sustain = is_sustainable(target_rate, out_rate, lag_samples=lag_used, latency=lat_stats, slo=slo,
                                 rate_fraction=rate_fraction,
                                 lag_rel_tolerance=lag_rel_tolerance).as_dict()

    return {
        "params": dict(params or {}),
        "throughput_bps": thr,
        "output_rate_bps": out_rate,
        "latency_ms": lat_stats,
        "latency_from_schedule_ms": latency_stats(lat_sched),
        "send_delay_ms": latency_stats(send_delay),
        "accounting": acc,
        "measured": {
            "count": int(kept.sum()),
            "rows": int(measured.sum()),
            "window_s": window_s,
            "start_ns": start_ns,
            "end_ms": end_ms,
            "input_rate_bps": achieved,
            "schedule_rate_bps": schedule_rate,
            "target_rate": target_rate,
        },
        "valid": verdict.valid,
        "reasons": verdict.reasons,
        "timeline": timeline(k_out, bin_s=timeline_bin_s),
        "warmup": {
            "policy": "window" if warmup_window_s is not None else "fraction",
            "fraction": fraction,
            "window_s": warmup_window_s,
            "count": int(warm.sum()),
            "kept": int(warm_kept.sum()),
            "latency_ms": latency_stats(_latency_ms(out_ms[warm_kept], created[warm_kept])),
            "throughput_bps": throughput_bps(created[warm_kept], out_ms[warm_kept]),
        },
        "lag": lag_info,
        "slo": normalize_slo(slo) or None,
        "sustainable": sustain,
    }
