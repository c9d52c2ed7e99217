"""Latency statistics, warm-up split, throughput and per-second timeline.

Definitions (design doc):

* ``intended_ns`` — slot the open-loop schedule assigned to a batch (absolute wall clock, ns);
  0 / null when there is none. Closed loop: ``intended_ns == created_ns``.
* ``created_ns`` — wall clock when the generator built the batch (ns).
* ``output_append_ms`` — broker LogAppendTime of the output record (ms): the end stamp.
* latency = output_append − created; latency from schedule = output_append − intended (ms).
* throughput (paper formula) = kept records ÷ (max end − min created), in batches/s,
  computed after warm-up.
* percentiles come from an HDR histogram recording microseconds with 3 significant
  digits over [1 µs, 1 h].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from hdrh.histogram import HdrHistogram

__all__ = [
    "LATENCY_KEYS",
    "HDR_LOWEST_US",
    "HDR_HIGHEST_US",
    "HDR_SIGNIFICANT_DIGITS",
    "latency_stats",
    "warmup_mask",
    "split_warmup",
    "throughput_bps",
    "timeline",
    "aggregate_repetitions",
    "column",
]

#: Keys of :func:`latency_stats` that are statistics (all float ms).
LATENCY_KEYS = ("p50", "p90", "p95", "p99", "p999", "max", "mean")
_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}

HDR_LOWEST_US = 1
HDR_HIGHEST_US = 3_600_000_000  # one hour in µs
HDR_SIGNIFICANT_DIGITS = 3

NAN = float("nan")


# --------------------------------------------------------------------------------------
# column access for pyarrow Tables and mappings of arrays
# --------------------------------------------------------------------------------------


def _has(data: Any, name: str) -> bool:
    if isinstance(data, pa.Table):
        return name in data.column_names
    return name in data


def _nrows(data: Any) -> int:
    if isinstance(data, pa.Table):
        return data.num_rows
    lengths = {len(np.asarray(v)) if not isinstance(v, (list, tuple)) else len(v) for v in data.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns have different lengths: {sorted(lengths)}")
    return lengths.pop() if lengths else 0


def column(data: Any, name: str, *, default: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(values, valid)`` of column ``name`` of a pyarrow Table or a mapping of arrays.

    Nulls (pyarrow) and NaN (float arrays) are invalid; their value is 0 (numeric) or
    "" (strings). Integer columns stay int64, so ns timestamps keep full precision.
    Missing column: ``default`` broadcast to every row (valid) or KeyError if None.
    """
    n = _nrows(data)
    if not _has(data, name):
        if default is None:
            raise KeyError(f"column {name!r} missing")
        return np.full(n, default), np.ones(n, dtype=bool)
    if isinstance(data, pa.Table):
        col = data.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        t = col.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            vals = np.asarray(col.fill_null("").to_numpy(zero_copy_only=False))
        elif pa.types.is_boolean(t):
            vals = np.asarray(col.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        elif pa.types.is_integer(t) or pa.types.is_timestamp(t):
            vals = np.asarray(col.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        elif pa.types.is_floating(t):
            vals = np.asarray(col.fill_null(NAN).to_numpy(zero_copy_only=False), dtype=np.float64)
            valid &= np.isfinite(vals)
            vals = np.where(valid, vals, 0.0)
        else:
            vals = np.asarray(col.to_numpy(zero_copy_only=False))
        return vals, valid
    vals = np.asarray(data[name])
    if vals.dtype.kind == "f":
        valid = np.isfinite(vals)
        return np.where(valid, vals, 0.0), valid
    if vals.dtype.kind in "iu":
        return vals.astype(np.int64, copy=False), np.ones(len(vals), dtype=bool)
    return vals, np.ones(len(vals), dtype=bool)


def _take(data: Any, mask: np.ndarray) -> Any:
    """Rows of ``data`` where ``mask`` is True, same container type, same row order."""
    if isinstance(data, pa.Table):
        return data.filter(pa.array(mask, type=pa.bool_()))
    out = {}
    for k, v in data.items():
        out[k] = np.asarray(v)[mask]
    return out


# --------------------------------------------------------------------------------------
# latency statistics
# --------------------------------------------------------------------------------------


def latency_stats(values_ms: Any) -> dict[str, float]:
    """Latency statistics in ms with µs resolution.

    Values (ms) are rounded to whole microseconds and recorded in an HDR histogram
    (1 µs … 1 h, 3 significant digits); ``p50 p90 p95 p99 p999`` are the histogram's
    values at those percentiles (HdrHistogram convention: the highest value equivalent
    to the bucket, i.e. at most 0.1 % above the true order statistic). ``mean`` and
    ``max`` are exact over the µs-rounded values (no bucket error). ``count`` is the
    number of finite values. Values below 0 (clock skew) or above 1 h are clamped into
    the histogram range for the percentiles only. NaN / inf inputs are ignored.
    Empty input: every statistic NaN, count 0.
    """
    v = np.asarray(values_ms, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    out: dict[str, float] = {k: NAN for k in LATENCY_KEYS}
    out["count"] = int(len(v))
    if len(v) == 0:
        return out
    us = np.rint(v * 1000.0).astype(np.int64)
    clamped = np.clip(us, 0, HDR_HIGHEST_US)
    h = HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGNIFICANT_DIGITS)
    vals, counts = np.unique(clamped, return_counts=True)
    for val, cnt in zip(vals.tolist(), counts.tolist()):
        h.record_value(val, cnt)
    pv = h.get_percentile_to_value_dict(list(_PERCENTILES.values()))
    for key, p in _PERCENTILES.items():
        out[key] = float(pv[p]) / 1000.0
    out["max"] = float(us.max()) / 1000.0
    out["mean"] = float(us.mean()) / 1000.0
    return out


# --------------------------------------------------------------------------------------
# warm-up
# --------------------------------------------------------------------------------------


def warmup_mask(data: Any, fraction: float | None = 0.25, window_s: float | None = None,
                order_by: str | None = "output_append_ms") -> np.ndarray:
    """Boolean mask of warm-up rows.

    * ``window_s`` given: warm-up = rows with ``created_ns < min(created_ns) + window_s``
      (seconds from the first created); ``fraction`` is then ignored.
    * otherwise the first ``floor(n × fraction)`` rows in output order are warm-up.
      Output order = ascending ``order_by`` (default the output append time), ties kept
      in row order, which is the collector's consumption order; ``order_by=None`` or a
      missing column uses row order alone. Rows with a null ``order_by`` sort last.

    All rows count (scored, dead-lettered, duplicates): warm-up is a property of the
    run's time line, filtering comes afterwards.
    """
    n = _nrows(data)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    if window_s is not None:
        if window_s < 0:
            raise ValueError("window_s must be >= 0")
        created, ok = column(data, "created_ns")
        if not ok.any():
            return mask
        first = created[ok].min()
        limit = first + window_s * 1e9 if created.dtype.kind == "f" else first + int(round(window_s * 1e9))
        return ok & (created < limit)
    if fraction is None or fraction == 0:
        return mask
    if not 0 <= fraction < 1:
        raise ValueError("fraction must be in [0, 1)")
    k = int(math.floor(n * fraction))
    if k == 0:
        return mask
    if order_by is not None and _has(data, order_by):
        key, ok = column(data, order_by)
        key = key.astype(np.float64) if key.dtype.kind != "f" else key.copy()
        key[~ok] = np.inf
        order = np.argsort(key, kind="stable")
    else:
        order = np.arange(n)
    mask[order[:k]] = True
    return mask


def split_warmup(data: Any, fraction: float | None = 0.25, window_s: float | None = None,
                 order_by: str | None = "output_append_ms") -> tuple[Any, Any]:
    """Split a pyarrow Table (or a mapping of equal-length arrays) into
    ``(measured, warmup)`` of the same type, each in the original row order.

    Warm-up rows are kept apart, not dropped; see :func:`warmup_mask` for the rule
    (default: first 25 % of records in output order; or a window of ``window_s``
    seconds from the first created).
    """
    m = warmup_mask(data, fraction, window_s, order_by)
    return _take(data, ~m), _take(data, m)


# --------------------------------------------------------------------------------------
# throughput and timeline
# --------------------------------------------------------------------------------------


def throughput_bps(created_ns: Any, output_append_ms: Any) -> float:
    """Paper formula: ``n / (max(output_append) − min(created))`` in batches per second.

    Pass the kept records only (after warm-up, scored, not duplicates). NaN when there
    are no records or the span is not positive.
    """
    c = np.asarray(created_ns)
    o = np.asarray(output_append_ms)
    n = len(c)
    if n == 0 or len(o) != n:
        if len(o) != n:
            raise ValueError("created_ns and output_append_ms differ in length")
        return NAN
    span_ns = int(o.max()) * 1_000_000 - int(c.min()) if o.dtype.kind in "iu" and c.dtype.kind in "iu" \
        else float(o.max()) * 1e6 - float(c.min())
    if span_ns <= 0:
        return NAN
    return n / (span_ns / 1e9)


def _block_medians(created: np.ndarray, latency: np.ndarray, k: int) -> list[float]:
    order = np.argsort(created, kind="stable")
    lat = latency[order]
    return [float(np.median(lat[i:i + k])) for i in range(0, len(lat), k)]


def output_rate_bps(created_ns: Any, output_append_ms: Any, all_created_ns: Any = None,
                    all_output_append_ms: Any = None, block_fraction: float = 0.1) -> float:
    """The rate the pipeline kept up with over the measured window, batches/s: what a
    sustainability check compares with the offered rate.

    ``(n − 1) / (creation span + latency growth)`` over the kept records. Latency growth = the
    highest median latency of a block of the kept records (creation order, blocks of
    ``block_fraction`` of them) minus the lowest block median of *all* records of the point
    (``all_*``: warm-up included; default: the kept ones), or 0. A pipeline that keeps up, whatever
    its latency, reads the rate it was fed. One at capacity c < r builds latency at (r − c)/c and
    reads c or less (latency built during the warm-up counts against the measured window), also when the backlog was built during the warm-up or is drained in a burst after
    the generator stopped (the peak counts, not the end).

    Not the paper's throughput (:func:`throughput_bps`): its span runs from the first creation to
    the last output and so contains one end-to-end latency. At 100 batches/s kept up for 6 s with
    300 ms latency it reads 95/s, under 0.98·r. Nor the pace of the outputs, which a backlog
    drained in a burst outruns. NaN with fewer than two kept records.
    """
    c = np.asarray(created_ns, dtype=np.float64)
    o = np.asarray(output_append_ms, dtype=np.float64) * 1e6
    ok = np.isfinite(c) & np.isfinite(o)
    c, o = c[ok], o[ok]
    n = len(c)
    if n < 2:
        return NAN
    k = max(1, int(n * block_fraction))
    peak = max(_block_medians(c, o - c, k))
    if all_created_ns is not None and all_output_append_ms is not None:
        ac = np.asarray(all_created_ns, dtype=np.float64)
        ao = np.asarray(all_output_append_ms, dtype=np.float64) * 1e6
        aok = np.isfinite(ac) & np.isfinite(ao)
        floor = min(_block_medians(ac[aok], (ao - ac)[aok], k)) if aok.any() else peak
    else:
        floor = min(_block_medians(c, o - c, k))
    span_ns = (c.max() - c.min()) + max(0.0, peak - floor)
    return (n - 1) / (span_ns / 1e9) if span_ns > 0 else NAN


def timeline(output_append_ms: Any, bin_s: float = 1.0, origin_ms: float | None = None) -> dict[str, Any]:
    """Records per second of output append time.

    Bin k counts records with ``origin + k·bin_s ≤ output_append < origin + (k+1)·bin_s``;
    ``origin_ms`` defaults to the first (smallest) append time, so the first bin starts
    with the first record and the last bin is usually partial. Returns
    ``{"origin_ms", "bin_s", "counts": [int, ...], "rate_per_s": [float, ...]}``
    (rate = count / bin_s).
    """
    o = np.asarray(output_append_ms, dtype=np.float64)
    o = o[np.isfinite(o)]
    if len(o) == 0:
        return {"origin_ms": None, "bin_s": float(bin_s), "counts": [], "rate_per_s": []}
    origin = float(o.min()) if origin_ms is None else float(origin_ms)
    idx = np.floor((o - origin) / (bin_s * 1000.0)).astype(np.int64)
    idx = idx[idx >= 0]
    counts = np.bincount(idx) if len(idx) else np.zeros(0, dtype=np.int64)
    return {
        "origin_ms": origin,
        "bin_s": float(bin_s),
        "counts": [int(x) for x in counts],
        "rate_per_s": [float(x) / bin_s for x in counts],
    }


# --------------------------------------------------------------------------------------
# repetitions
# --------------------------------------------------------------------------------------

_SKIP_KEYS = {"params", "timeline", "reasons", "bursts", "slo"}
# absolute clock stamps: averaging them across repetitions means nothing
_SKIP_LEAVES = {"start_ns", "end_ms", "origin_ms"}


def _leaves(d: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for k, v in d.items():
        if (not prefix and k in _SKIP_KEYS) or k in _SKIP_LEAVES:
            continue
        if isinstance(v, bool) or isinstance(v, (str, list, tuple)):
            continue
        if isinstance(v, Mapping):
            out.update(_leaves(v, prefix + (k,)))
        elif v is None:
            out[prefix + (k,)] = NAN
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[prefix + (k,)] = float(v)
    return out


def _mean_sd(vals: Sequence[float]) -> dict[str, float]:
    a = np.asarray(vals, dtype=np.float64)
    a = a[np.isfinite(a)]
    n = int(len(a))
    mean = float(a.mean()) if n else NAN
    sd = float(a.std(ddof=1)) if n >= 2 else NAN
    return {"mean": mean, "sd": sd, "n": n}


def aggregate_repetitions(points: Sequence[Mapping[str, Any]], only_valid: bool = False) -> dict[str, Any]:
    """Mean ± sample standard deviation (ddof=1) of every numeric statistic across repetitions.

    The result mirrors the point schema: each numeric leaf (``throughput_bps``,
    ``latency_ms.p99``, ``accounting.missing``, …) becomes ``{"mean", "sd", "n"}`` where
    n counts the repetitions with a finite value (NaN / None are skipped); sd is NaN
    when n < 2. ``params`` comes from the first point; ``timeline`` and ``bursts`` are
    not aggregated. Extra keys: ``repetitions`` (points given), ``used`` (points
    aggregated), ``valid`` (all used points valid), ``valid_count``, ``reasons`` (one
    list per repetition), ``sustainable_count`` (where points carry a verdict).
    ``only_valid=True`` aggregates the valid points only.
    """
    pts = list(points)
    used = [p for p in pts if p.get("valid", True)] if only_valid else pts
    result: dict[str, Any] = {
        "params": dict(pts[0].get("params") or {}) if pts else {},
        "repetitions": len(pts),
        "used": len(used),
        "valid": bool(used) and all(bool(p.get("valid", True)) for p in used),
        "valid_count": sum(1 for p in pts if p.get("valid", True)),
        "reasons": [list(p.get("reasons", [])) for p in pts],
    }
    verdicts = [p["sustainable"]["ok"] for p in used
                if isinstance(p.get("sustainable"), Mapping) and "ok" in p["sustainable"]]
    if verdicts:
        result["sustainable_count"] = int(sum(bool(v) for v in verdicts))
    keys: list[tuple[str, ...]] = []
    leaves = [_leaves(p) for p in used]
    for lv in leaves:
        for k in lv:
            if k not in keys:
                keys.append(k)
    for key in keys:
        agg = _mean_sd([lv.get(key, NAN) for lv in leaves])
        node = result
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = agg
    return result
