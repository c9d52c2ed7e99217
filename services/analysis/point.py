"""One measured repetition: its rows classified, its validity, and its summary (the result schema of
docs/results.md).

Row classes, over the batches the generator sent (one row each):

* **warm-up** rows: :mod:`services.analysis.warmup` (first 25 % in output order, or a window);
* **scored** rows: status ``scored`` with both ``created_ns`` and ``output_append_ms``;
* **kept** rows: scored rows outside the warm-up. Latency, throughput, the timeline and the
  measured window use kept rows only; latency from schedule and send delay use the kept rows that
  have a slot (``intended_ns > 0``); the e2e at the collector (``latency_receive_ms``: collector
  receive − created, µs resolution, one host clock) uses the kept rows with a collector stamp.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from services.analysis.accounting import account, accounting_reasons
from services.analysis.columns import as_table, column, present, take
from services.analysis.stats import (
    NAN,
    input_rate,
    latency_ms,
    latency_stats,
    output_rate_bps,
    throughput_bps,
    timeline,
)
from services.analysis.sustain import is_sustainable, lag_trend, normalize_slo
from services.analysis.warmup import Warmup, warmup_mask


@dataclass(frozen=True)
class PointRules:
    """How a point is judged: the experiment's ``validity`` and ``warmup`` settings, the constant
    rate it was offered (``target_rate``, which enables the sustainability verdict), and the latency
    SLO of a search (``{"p99": 50.0}``)."""

    min_duration_s: float
    min_count: int
    rate_tolerance: float
    warmup: Warmup = field(default_factory=Warmup)
    target_rate: float | None = None
    slo: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Rows:
    """The sent rows of a repetition, classified once (see the module docstring)."""

    created_ns: np.ndarray
    intended_ns: np.ndarray
    output_ms: np.ndarray
    has_created: np.ndarray
    has_slot: np.ndarray
    warm: np.ndarray
    scored: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        return self.scored & ~self.warm

    def latency(self, mask: np.ndarray) -> np.ndarray:
        return latency_ms(self.output_ms[mask], self.created_ns[mask])

    def latency_from_schedule(self, mask: np.ndarray) -> np.ndarray:
        return latency_ms(self.output_ms[mask], self.intended_ns[mask])


def classify(table: pa.Table, warmup: Warmup) -> Rows:
    """Classify the rows of ``table`` (the sent rows of ``batches.parquet``)."""
    created, has_created = column(table, "created_ns")
    out_ms, has_out = column(table, "output_append_ms")
    intended, has_intended = column(table, "intended_ns")
    status, _ = column(table, "status")
    return Rows(created_ns=created, intended_ns=intended, output_ms=out_ms, has_created=has_created,
                has_slot=has_intended & (intended > 0), warm=warmup_mask(table, warmup),
                scored=(status == "scored") & has_created & has_out)


def check_validity(rules: PointRules, *, window_s: float, kept: int, achieved_rate: float,
                   reference_rate: float | None) -> list[str]:
    """Reasons a measured window makes a point invalid (none: valid): shorter than
    ``min_duration_s``; fewer than ``min_count`` kept records; the achieved input rate off the
    reference rate by more than ``rate_tolerance`` (relative; checked when a reference is known)."""
    reasons: list[str] = []
    if not window_s >= rules.min_duration_s:  # NaN (no kept record) fails too
        shown = f"{window_s:.3f}" if math.isfinite(window_s) else "n/a"
        reasons.append(f"measured window {shown} s < minimum {rules.min_duration_s:g} s")
    if kept < rules.min_count:
        reasons.append(f"kept records {kept} < minimum {rules.min_count}")
    if reference_rate:
        if not math.isfinite(achieved_rate):
            reasons.append(f"achieved input rate unknown (target {reference_rate:.3f}/s)")
        elif abs(achieved_rate - reference_rate) > rules.rate_tolerance * reference_rate:
            reasons.append(f"achieved input rate {achieved_rate:.3f}/s off target {reference_rate:.3f}/s "
                           f"by more than {rules.rate_tolerance:.0%}")
    return reasons


def summarize_point(data: pa.Table | Mapping[str, Any], rules: PointRules, *,
                    params: Mapping[str, Any] | None = None, lag_samples: Any = None,
                    predictions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Summarise one repetition from the collector's per-batch table (columns ``sent``, ``status``,
    ``duplicates``, ``created_ns``, ``intended_ns``, ``output_append_ms``).

    ``lag_samples``: ``(t_s, backlog)`` pairs (Unix seconds); only those inside the measured window
    ``[min created, max output append]`` of the kept records are used. ``predictions``: the
    collector's prediction check (``checked``, ``wrong``). Returns the point schema of
    docs/results.md; undefined statistics are NaN.
    """
    table = as_table(data)
    acc = account(table, predictions)
    sent = take(table, column(table, "sent")[0])
    rows = classify(sent, rules.warmup)
    kept, slotted = rows.kept, rows.kept & rows.has_slot
    received, has_received = present(sent, "collector_receive_ns")
    at_collector = kept & has_received
    measured = _measured(rows, rules)
    lat = latency_stats(rows.latency(kept))
    out_rate = output_rate_bps(rows.created_ns[kept], rows.output_ms[kept],
                               rows.created_ns[rows.scored], rows.output_ms[rows.scored])
    reasons = check_validity(rules, window_s=measured["window_s"], kept=measured["count"],
                             achieved_rate=measured["input_rate_bps"],
                             reference_rate=measured["reference_rate"]) + accounting_reasons(acc)
    lag = _window_lag(lag_samples, measured)
    return {
        "params": dict(params or {}),
        "throughput_bps": throughput_bps(rows.created_ns[kept], rows.output_ms[kept]),
        "output_rate_bps": out_rate,
        "latency_ms": lat,
        "latency_from_schedule_ms": latency_stats(rows.latency_from_schedule(slotted)),
        "latency_receive_ms": latency_stats((received[at_collector] - rows.created_ns[at_collector]) / 1e6),
        "send_delay_ms": latency_stats((rows.created_ns[slotted] - rows.intended_ns[slotted]) / 1e6),
        "accounting": acc,
        "measured": measured,
        "valid": not reasons,
        "reasons": reasons,
        "timeline": timeline(rows.output_ms[kept]),
        "warmup": _warmup_summary(rows, rules.warmup),
        "lag": None if lag is None else lag_trend(lag, rate=rules.target_rate).as_dict(),
        "slo": normalize_slo(rules.slo) or None,
        "sustainable": None if rules.target_rate is None else is_sustainable(
            rules.target_rate, out_rate, lag_samples=lag, latency=lat, slo=rules.slo).as_dict(),
    }


def _measured(rows: Rows, rules: PointRules) -> dict[str, Any]:
    """The measured window of the kept records, and the input rates the validity check compares.

    The achieved input rate is over *every* batch the generator sent (any status), not the measured
    subset: warm-up is cut in output order, and with several partitions draining unevenly that
    subset mixes early- and late-created batches. Without a target rate (bursty, ramp, Poisson,
    closed loop) the reference is the schedule's own rate over the slots."""
    kept = rows.kept
    start_ns = end_ms = None
    window_s = NAN
    if kept.any():
        start_ns, end_ms = int(rows.created_ns[kept].min()), int(rows.output_ms[kept].max())
        window_s = (end_ms * 1_000_000 - start_ns) / 1e9
    schedule_rate = input_rate(rows.intended_ns[rows.has_slot])
    reference = rules.target_rate if rules.target_rate is not None else (
        schedule_rate if rows.has_slot.any() else None)
    return {"count": int(kept.sum()), "rows": int((~rows.warm).sum()), "window_s": window_s,
            "start_ns": start_ns, "end_ms": end_ms,
            "input_rate_bps": input_rate(rows.created_ns[rows.has_created]),
            "schedule_rate_bps": schedule_rate, "target_rate": rules.target_rate, "reference_rate": reference}


def _window_lag(lag_samples: Any, measured: Mapping[str, Any]) -> np.ndarray | None:
    """The ``(t_s, backlog)`` samples (an n × 2 array) inside the measured window (None without
    samples; none inside without kept records)."""
    if lag_samples is None or len(lag_samples) == 0:
        return None
    arr = np.asarray(lag_samples)
    if measured["start_ns"] is None:
        return arr[:0]
    lo, hi = measured["start_ns"] / 1e9, measured["end_ms"] / 1e3
    return arr[(arr[:, 0] >= lo) & (arr[:, 0] <= hi)]


def _warmup_summary(rows: Rows, rule: Warmup) -> dict[str, Any]:
    warm_scored = rows.warm & rows.scored
    return {**rule.as_dict(), "count": int(rows.warm.sum()), "kept": int(warm_scored.sum()),
            "latency_ms": latency_stats(rows.latency(warm_scored)),
            "throughput_bps": throughput_bps(rows.created_ns[warm_scored], rows.output_ms[warm_scored])}
