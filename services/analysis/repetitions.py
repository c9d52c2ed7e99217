"""Repetitions of one point: mean ± sample standard deviation of every statistic."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

NAN = float("nan")
# Not statistics: kept from the first repetition or per repetition, never averaged.
_SKIP_KEYS = {"params", "timeline", "reasons", "bursts", "slo"}
# Absolute clock stamps: averaging them across repetitions means nothing.
_SKIP_LEAVES = {"start_ns", "end_ms", "origin_ms"}


def _leaves(d: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for k, v in d.items():
        if (not prefix and k in _SKIP_KEYS) or k in _SKIP_LEAVES or isinstance(v, (bool, str, list, tuple)):
            continue
        if isinstance(v, Mapping):
            out.update(_leaves(v, prefix + (k,)))
        elif v is None:
            out[prefix + (k,)] = NAN
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[prefix + (k,)] = float(v)
    return out


def _mean_sd(vals: Sequence[float]) -> dict[str, float]:
    a = [v for v in vals if math.isfinite(v)]
    return {"mean": statistics.fmean(a) if a else NAN, "sd": statistics.stdev(a) if len(a) >= 2 else NAN,
            "n": len(a)}


def aggregate_repetitions(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every numeric leaf of the point schema (``throughput_bps``, ``latency_ms.p99``,
    ``accounting.missing``, …) becomes ``{"mean", "sd", "n"}``: n counts the repetitions with a
    finite value (NaN / None skipped), sd is the sample standard deviation (ddof 1, NaN for n < 2).
    ``params`` comes from the first repetition; ``timeline``, ``bursts``, ``reasons``, ``slo`` and
    absolute stamps are not aggregated."""
    leaves = [_leaves(p) for p in points]
    keys = list(dict.fromkeys(k for lv in leaves for k in lv))
    result: dict[str, Any] = {"params": dict(points[0]["params"]) if points else {}}
    for key in keys:
        node = result
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = _mean_sd([lv.get(key, NAN) for lv in leaves])
    return result


def _split_mean_sd(node: Any) -> tuple[Any, Any]:
    if isinstance(node, dict) and set(node) == {"mean", "sd", "n"}:
        return node["mean"], node["sd"]
    if not isinstance(node, dict):
        return node, None
    means, sds = {}, {}
    for k, v in node.items():
        means[k], sd = _split_mean_sd(v)
        if sd is not None:
            sds[k] = sd
    return means, sds


def combine_repetitions(reps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The point entry of summary.json: the repetition itself when there is one; else the mean of
    every statistic with ``sd`` beside it, ``per_repetition``, valid only when every repetition is,
    the union of their reasons, and sustainable only when every repetition is."""
    if len(reps) == 1:
        return {**reps[0], "repetitions": 1}
    means, sds = _split_mean_sd(aggregate_repetitions(reps))
    point = {**means, "sd": sds, "repetitions": len(reps), "valid": all(r["valid"] for r in reps),
             "reasons": sorted({x for r in reps for x in r["reasons"]}), "per_repetition": list(reps)}
    if any("search_ok" in r for r in reps):
        point["search_ok"] = all(r["search_ok"] for r in reps)
        point["sustainable"] = {"ok": point["search_ok"],
                                "reasons": sorted({x for r in reps for x in r["sustainable"]["reasons"]})}
    if any("recovery_s" in r for r in reps):
        point["recovery_s"] = [r.get("recovery_s") for r in reps]
    return point
