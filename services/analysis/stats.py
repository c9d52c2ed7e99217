"""Latency statistics, rates and the per-second timeline (docs/results.md, "Definitions").

* latency = output append − created; latency from schedule = output append − intended (ms), computed
  in integer ns (:func:`latency_ms`), so a ns stamp loses nothing;
* percentiles come from an HDR histogram recording microseconds with 3 significant digits over
  [1 µs, 1 h];
* throughput (paper) = kept records ÷ (max output append − min created), batches/s;
* output rate = (kept − 1) ÷ (creation span + latency growth): the rate the pipeline kept up with;
* input rate of a set of stamps = (n − 1) ÷ their span.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

#: Keys of :func:`latency_stats` that are statistics (all float ms); ``count`` comes beside them.
LATENCY_KEYS = ("p50", "p90", "p95", "p99", "p999", "max", "mean")
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
HDR_LOWEST_US = 1
HDR_HIGHEST_US = 3_600_000_000  # one hour in µs
HDR_SIGNIFICANT_DIGITS = 3
NS_PER_MS = 1_000_000
NAN = float("nan")


def latency_ms(end_ms: np.ndarray, start_ns: np.ndarray) -> np.ndarray:
    """``end_ms − start_ns`` in ms, exact for integer stamps: the difference is taken in ns."""
    return (np.asarray(end_ms) * NS_PER_MS - np.asarray(start_ns)) / NS_PER_MS


def latency_stats(values_ms: Any) -> dict[str, float]:
    """Latency statistics in ms with µs resolution.

    Values are rounded to whole µs and recorded in the HDR histogram; ``p50 … p999`` are its values
    at those percentiles (HdrHistogram's convention: the highest value equivalent to the bucket, at
    most 0.1 % above the order statistic, and never above ``max``). ``mean`` and ``max`` are exact
    over the µs values.
    Values below 0 (clock skew) or above 1 h are clamped into the range for the percentiles only.
    NaN / inf are ignored; ``count`` is the number of finite values. No values: NaN statistics.
    """
    v = np.asarray(values_ms, dtype=np.float64)
    v = v[np.isfinite(v)]
    out: dict[str, float] = {k: NAN for k in LATENCY_KEYS}
    out["count"] = len(v)
    if len(v) == 0:
        return out
    us = np.rint(v * 1000.0).astype(np.int64)
    h = HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGNIFICANT_DIGITS)
    vals, counts = np.unique(np.clip(us, 0, HDR_HIGHEST_US), return_counts=True)
    for val, cnt in zip(vals.tolist(), counts.tolist()):
        h.record_value(val, cnt)
    at = h.get_percentile_to_value_dict(list(PERCENTILES.values()))
    out["max"] = float(us.max()) / 1000.0
    for key, p in PERCENTILES.items():
        out[key] = min(at[p] / 1000.0, out["max"])  # a bucket's top never passes the largest value
    out["mean"] = float(us.mean()) / 1000.0
    return out


def input_rate(times_ns: Any) -> float:
    """``(n − 1) / (max − min)`` per second: the number of intervals over the span, exact for evenly
    spaced stamps. NaN for fewer than two stamps or no span."""
    t = np.asarray(times_ns)
    if len(t) < 2:
        return NAN
    span_ns = int(t.max()) - int(t.min())
    return (len(t) - 1) / (span_ns / 1e9) if span_ns > 0 else NAN


def throughput_bps(created_ns: Any, output_append_ms: Any) -> float:
    """The paper's formula over the kept records: ``n / (max output append − min created)``,
    batches/s. NaN without records or without a positive span."""
    c, o = np.asarray(created_ns), np.asarray(output_append_ms)
    if len(c) != len(o):
        raise ValueError("created_ns and output_append_ms differ in length")
    if len(c) == 0:
        return NAN
    span_ns = int(o.max()) * NS_PER_MS - int(c.min())
    return len(c) / (span_ns / 1e9) if span_ns > 0 else NAN


def _block_medians(created_ns: np.ndarray, lat_ns: np.ndarray, block: int) -> list[float]:
    lat = lat_ns[np.argsort(created_ns)]  # creation stamps are ns: no ties to order
    return [float(np.median(lat[i:i + block])) for i in range(0, len(lat), block)]


def output_rate_bps(created_ns: Any, output_append_ms: Any, all_created_ns: Any, all_output_append_ms: Any,
                    block_fraction: float = 0.1) -> float:
    """The rate the pipeline kept up with over the measured window, batches/s: what the
    sustainability check compares with the offered rate.

    ``(n − 1) / (creation span + latency growth)`` over the ``n`` kept records. Latency growth = the
    highest median latency of a block of the kept records (creation order, blocks of
    ``block_fraction`` of them) minus the lowest block median of *all* the point's scored records
    (``all_*``: warm-up included), or 0 when negative. A pipeline that keeps up, whatever its
    latency, reads the rate it was fed; one at capacity c < r builds latency at (r − c)/c and reads c
    or less, also when the backlog was built in the warm-up or drained in a burst after the generator
    stopped (the peak counts, not the end). NaN with fewer than two kept records.
    """
    c = np.asarray(created_ns)
    if len(c) < 2:
        return NAN
    block = max(1, int(len(c) * block_fraction))
    peak = max(_block_medians(c, _lat_ns(output_append_ms, c), block))
    ac = np.asarray(all_created_ns)
    floor = min(_block_medians(ac, _lat_ns(all_output_append_ms, ac), block))
    span_ns = float(c.max() - c.min()) + max(0.0, peak - floor)
    return (len(c) - 1) / (span_ns / 1e9) if span_ns > 0 else NAN


def _lat_ns(output_append_ms: Any, created_ns: np.ndarray) -> np.ndarray:
    return np.asarray(output_append_ms) * NS_PER_MS - created_ns


def timeline(output_append_ms: Any, bin_s: float = 1.0) -> dict[str, Any]:
    """Records per ``bin_s`` of output append time. Bin k counts records with
    ``first + k·bin_s ≤ append < first + (k+1)·bin_s``, first = the earliest append (so the last
    bin is usually partial): ``{"origin_ms", "bin_s", "counts", "rate_per_s"}``."""
    o = np.asarray(output_append_ms)
    if len(o) == 0:
        return {"origin_ms": None, "bin_s": float(bin_s), "counts": [], "rate_per_s": []}
    origin = int(o.min())
    counts = np.bincount(((o - origin) // (bin_s * 1000.0)).astype(int))
    return {"origin_ms": origin, "bin_s": float(bin_s), "counts": counts.tolist(),
            "rate_per_s": (counts / bin_s).tolist()}
