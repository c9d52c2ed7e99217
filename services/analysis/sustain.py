"""Sustainability of a rate, consumer-lag trend, and the sustainable-throughput search.

Definitions:

* **Lag trend** (:func:`lag_trend`): ordinary least-squares line through the consumer-lag
  samples ``(t_s, lag)`` (lag in records = batches, t in seconds). Slope b in batches/s,
  its standard error ``se = sqrt(SSR / (n − 2) / Sxx)``. The lag is **rising** when
  ``b > max(tolerance, 2·se)`` with ``tolerance = max(abs_tolerance, rel_tolerance × rate)``
  (default rel_tolerance 1 % of the target rate, in batches/s) *and* the fitted rise over the
  samples, ``b × (t_last − t_first)``, exceeds ``min_rise`` (2 records): the backlog counts the
  records in flight, so at a low rate a single record entering the pipeline is a step of 1 that a
  short window would fit as a significant slope. Fewer than 3 samples (or no time spread): not
  tested, never "rising".
* **Sustainable at rate r** (:func:`is_sustainable`): over the measured window
  (1) output rate (:func:`services.analysis.stats.output_rate_bps`, not the paper's throughput) ≥ 0.98·r, (2) lag trend
  not rising, (3) for every SLO given,
  latency pXX ≤ limit. A check whose input is missing (no lag samples, no SLO) is skipped
  and listed in ``skipped``.
* **Capacity search** (:func:`search_sustainable`): start at ``start_rate``, multiply by
  ``growth`` (2) while the rate passes (capped at ``max_rate``); at the first failure bisect
  (arithmetic midpoint) between the last pass ``lo`` and the first fail ``hi`` until
  ``(hi − lo) / lo ≤ precision``. If the start rate already fails, divide by ``growth``
  until a rate passes (down to ``min_rate``) and bisect from there. The sustainable rate
  is ``lo``, the highest rate that passed; the true capacity lies in ``[lo, hi)`` if the
  pass/fail outcome is monotonic in the rate. Noise can make it non-monotonic; the
  search never re-tests a rate and trusts each verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "LagTrend",
    "lag_trend",
    "SustainVerdict",
    "is_sustainable",
    "normalize_slo",
    "PointResult",
    "SearchPoint",
    "SearchResult",
    "search_sustainable",
    "point_result_from_summary",
]

NAN = float("nan")
RATE_FRACTION = 0.98       # output rate >= 0.98 x the offered rate
LAG_REL_TOLERANCE = 0.01   # a backlog slope within 1 % of the offered rate is not "rising"
MIN_RISE = 2.0             # nor is a backlog that rose by 2 records or fewer over the window
GROWTH = 2.0               # the search doubles the rate until one fails


# --------------------------------------------------------------------------------------
# lag trend
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LagTrend:
    """Result of :func:`lag_trend`. slope / stderr / tolerance / threshold in batches/s; rise (the
    slope times the samples' time span) in batches."""

    slope: float
    stderr: float
    tolerance: float
    threshold: float
    rising: bool
    n: int
    note: str = ""
    rise: float = NAN

    def as_dict(self) -> dict[str, Any]:
        return {"slope": self.slope, "stderr": self.stderr, "tolerance": self.tolerance,
                "threshold": self.threshold, "rise": self.rise, "rising": self.rising, "n": self.n,
                "note": self.note}


def _as_samples(samples: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(samples)
    if a.size == 0:
        a = a.reshape(0, 2)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError("lag samples must be a sequence of (t_s, lag) pairs")
    ok = np.isfinite(a).all(axis=1)
    return a[ok, 0], a[ok, 1]


def lag_trend(samples: Any, *, rate: float | None = None, rel_tolerance: float = LAG_REL_TOLERANCE,
              abs_tolerance: float = 0.0, min_rise: float = MIN_RISE) -> LagTrend:
    """Least-squares slope test of consumer lag against time.

    ``samples``: sequence of ``(t_s, lag)`` (any time origin). Rising when
    ``slope > max(tolerance, 2·stderr)``, ``tolerance = max(abs_tolerance,
    rel_tolerance·rate)`` (rate in batches/s; without a rate only abs_tolerance applies), and
    ``slope × span(t) > min_rise`` (records).
    """
    t, y = _as_samples(samples)
    n = int(len(t))
    tol = max(float(abs_tolerance), float(rel_tolerance) * float(rate) if rate else 0.0)
    if n < 2 or np.ptp(t) == 0:
        return LagTrend(NAN, NAN, tol, NAN, False, n, "fewer than 2 distinct lag sample times: not tested")
    tm = t.mean()
    dt = t - tm
    sxx = float((dt * dt).sum())
    slope = float((dt * y).sum() / sxx)  # Σ dt = 0, so Σ dt·(y − ȳ) = Σ dt·y
    if n < 3:
        return LagTrend(slope, NAN, tol, NAN, False, n, "fewer than 3 lag samples: not tested")
    resid = y - (y.mean() + slope * dt)
    ssr = float((resid * resid).sum())
    stderr = math.sqrt(ssr / (n - 2) / sxx)
    threshold = max(tol, 2.0 * stderr)
    rise = slope * float(np.ptp(t))
    return LagTrend(slope, stderr, tol, threshold, slope > threshold and rise > min_rise, n, rise=rise)


# --------------------------------------------------------------------------------------
# sustainability verdict
# --------------------------------------------------------------------------------------


def normalize_slo(slo: Any) -> dict[str, float]:
    """SLO as ``{stat: limit_ms}``. Accepts None, a mapping like ``{"p99": 50.0}``, or a
    pair ``("p99", 50.0)``."""
    if slo is None:
        return {}
    if isinstance(slo, Mapping):
        return {str(k): float(v) for k, v in slo.items()}
    if isinstance(slo, (tuple, list)) and len(slo) == 2 and isinstance(slo[0], str):
        return {slo[0]: float(slo[1])}
    raise TypeError(f"SLO must be a mapping or a (stat, limit_ms) pair, not {slo!r}")


@dataclass(frozen=True)
class SustainVerdict:
    """``ok`` with failure ``reasons``; ``skipped`` lists checks without input."""

    ok: bool
    reasons: list[str]
    target_rate: float
    output_rate: float
    required_rate: float
    lag: LagTrend | None = None
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reasons": list(self.reasons), "target_rate": self.target_rate,
                "output_rate": self.output_rate, "required_rate": self.required_rate,
                "lag": self.lag.as_dict() if self.lag is not None else None, "skipped": list(self.skipped)}


def is_sustainable(target_rate: float, output_rate: float, *, lag_samples: Any = None,
                   latency: Mapping[str, float] | None = None, slo: Any = None,
                   rate_fraction: float = RATE_FRACTION, lag_rel_tolerance: float = LAG_REL_TOLERANCE,
                   lag_abs_tolerance: float = 0.0) -> SustainVerdict:
    """Is ``target_rate`` (batches/s) sustained?

    Passes when ``output_rate ≥ rate_fraction × target_rate`` (output_rate: the rate the pipeline
    kept up with, :func:`services.analysis.stats.output_rate_bps`), the lag
    trend of ``lag_samples`` is not rising
    (:func:`lag_trend` with tolerance ``lag_rel_tolerance × target_rate``), and every SLO
    stat in ``latency`` (a :func:`latency_stats` dict) is ≤ its limit. A missing or NaN
    SLO statistic fails the SLO check.
    """
    reasons: list[str] = []
    skipped: list[str] = []
    required = rate_fraction * target_rate
    if not (output_rate is not None and math.isfinite(output_rate) and output_rate >= required):
        reasons.append(f"output rate {output_rate:.3f}/s < {rate_fraction:g} × target "
                       f"{target_rate:.3f}/s = {required:.3f}/s" if output_rate is not None
                       and math.isfinite(output_rate) else "no output rate (no kept records)")
    trend = None
    if lag_samples is None or len(lag_samples) == 0:
        skipped.append("lag trend (no lag samples)")
    else:
        trend = lag_trend(lag_samples, rate=target_rate, rel_tolerance=lag_rel_tolerance,
                          abs_tolerance=lag_abs_tolerance)
        if trend.note:
            skipped.append(f"lag trend ({trend.note})")
        elif trend.rising:
            reasons.append(f"consumer lag rising: slope {trend.slope:.3f}/s > threshold "
                           f"{trend.threshold:.3f}/s (2·se {2 * trend.stderr:.3f}, tolerance {trend.tolerance:.3f}), "
                           f"{trend.rise:.1f} records over the window")
    slos = normalize_slo(slo)
    if not slos:
        skipped.append("latency SLO (none given)")
    for stat, limit in slos.items():
        val = (latency or {}).get(stat)
        if val is None or not math.isfinite(val):
            reasons.append(f"latency {stat} unavailable for SLO {limit:g} ms")
        elif val > limit:
            reasons.append(f"latency {stat} {val:.3f} ms > SLO {limit:g} ms")
    return SustainVerdict(not reasons, reasons, float(target_rate), float(output_rate)
                          if output_rate is not None else NAN, float(required), trend, skipped)


# --------------------------------------------------------------------------------------
# capacity search
# --------------------------------------------------------------------------------------


@dataclass
class PointResult:
    """What the search's ``evaluate(rate)`` callback returns for one tried rate."""

    sustainable: bool
    reasons: list[str] = field(default_factory=list)
    point: dict[str, Any] | None = None


@dataclass(frozen=True)
class SearchPoint:
    rate: float
    sustainable: bool
    phase: str  # "grow" | "shrink" | "bisect"
    result: PointResult


@dataclass
class SearchResult:
    """Outcome of :func:`search_sustainable`.

    ``sustainable_rate`` — highest rate that passed (None when none did);
    ``upper`` — lowest rate that failed above it (None when none failed);
    ``points`` — every tried rate in order; ``status`` — ``converged`` (bracket within
    precision), ``max_rate`` (max_rate itself passed), ``max_points`` (budget spent first),
    ``none_sustainable`` (nothing down to min_rate passed).
    """

    sustainable_rate: float | None
    upper: float | None
    points: list[SearchPoint]
    status: str
    precision: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "sustainable_rate": self.sustainable_rate,
            "upper": self.upper,
            "status": self.status,
            "precision": self.precision,
            "points": [{"rate": p.rate, "sustainable": p.sustainable, "phase": p.phase,
                        "reasons": list(p.result.reasons)} for p in self.points],
        }


def _coerce(res: Any) -> PointResult:
    if isinstance(res, PointResult):
        return res
    if isinstance(res, (bool, np.bool_)):
        return PointResult(bool(res))
    if isinstance(res, Mapping):
        return point_result_from_summary(res)
    raise TypeError(f"evaluate() must return PointResult, bool or a point dict, not {type(res).__name__}")


def search_sustainable(evaluate: Callable[[float], Any], start_rate: float, max_rate: float, *,
                       precision: float, max_points: int, growth: float = GROWTH,
                       min_rate: float | None = None) -> SearchResult:
    """Find the highest sustainable rate with exponential growth then bisection.

    ``evaluate(rate)`` runs (or fakes) one point and returns a :class:`PointResult`
    (a bool or a summarize_point dict are accepted too). ``precision`` is relative:
    the search stops when ``(upper − lower) / lower ≤ precision``. ``max_points`` bounds
    the number of evaluations. ``min_rate`` (default start_rate / 1024) bounds the
    downward search when the start rate fails.
    """
    if not (start_rate > 0 and max_rate > 0 and precision > 0 and growth > 1 and max_points >= 1):
        raise ValueError("need start_rate, max_rate, precision > 0, growth > 1, max_points >= 1")
    floor_rate = start_rate / 1024.0 if min_rate is None else float(min_rate)
    points: list[SearchPoint] = []
    lo: float | None = None
    hi: float | None = None

    def run(rate: float, phase: str) -> bool:
        res = _coerce(evaluate(rate))
        points.append(SearchPoint(float(rate), bool(res.sustainable), phase, res))
        return bool(res.sustainable)

    def budget() -> bool:
        return len(points) < max_points

    rate = min(float(start_rate), float(max_rate))
    # grow
    while budget():
        if run(rate, "grow"):
            lo = rate
            if rate >= max_rate:
                return SearchResult(lo, None, points, "max_rate", precision)
            rate = min(rate * growth, float(max_rate))
        else:
            hi = rate
            break
    # shrink when the very first rate failed
    if lo is None and hi is not None:
        rate = hi / growth
        while budget() and rate >= floor_rate:
            if run(rate, "shrink"):
                lo = rate
                break
            hi = rate
            rate /= growth
        if lo is None:
            status = "max_points" if not budget() and rate >= floor_rate else "none_sustainable"
            return SearchResult(None, hi, points, status, precision)
    if hi is None:  # budget ran out while still growing
        return SearchResult(lo, None, points, "max_points", precision)
    # bisect
    while (hi - lo) / lo > precision:
        if not budget():
            return SearchResult(lo, hi, points, "max_points", precision)
        mid = (lo + hi) / 2.0
        if run(mid, "bisect"):
            lo = mid
        else:
            hi = mid
    return SearchResult(lo, hi, points, "converged", precision)


def point_result_from_summary(point: Mapping[str, Any], require_valid: bool = True) -> PointResult:
    """Search verdict from a :func:`summarize_point` dict: sustainable when its
    ``sustainable.ok`` is true and (with ``require_valid``) the point is valid. Reasons
    merge both lists."""
    sus = point.get("sustainable")
    if not isinstance(sus, Mapping):
        ok, reasons = False, ["no sustainability verdict (summarize_point needs target_rate)"]
    else:
        ok, reasons = bool(sus["ok"]), list(sus["reasons"])
    if require_valid and not point["valid"]:
        ok = False
        reasons.extend(f"invalid: {r}" for r in point["reasons"])
    return PointResult(ok, reasons, dict(point))
