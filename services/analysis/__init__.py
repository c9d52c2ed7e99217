"""Analysis of Crayfish Mesh runs: pure functions over numpy arrays / pyarrow tables.

* :mod:`.stats` — HDR latency statistics, warm-up split, throughput, timeline,
  mean ± sd over repetitions;
* :mod:`.point` — validity verdict and the per-point summary (result schema);
* :mod:`.sustain` — consumer-lag trend, sustainability verdict, capacity search;
* :mod:`.bursts` — burst recovery time.

Each module's docstring states the exact definitions.
"""

from services.analysis.bursts import burst_recovery, burst_recovery_detail
from services.analysis.point import Verdict, check_validity, input_rate, summarize_point
from services.analysis.stats import (
    HDR_HIGHEST_US,
    HDR_LOWEST_US,
    HDR_SIGNIFICANT_DIGITS,
    LATENCY_KEYS,
    aggregate_repetitions,
    column,
    latency_stats,
    output_rate_bps,
    split_warmup,
    throughput_bps,
    timeline,
    warmup_mask,
)
from services.analysis.sustain import (
    LagTrend,
    PointResult,
    SearchPoint,
    SearchResult,
    SustainVerdict,
    is_sustainable,
    lag_trend,
    normalize_slo,
    point_result_from_summary,
    search_sustainable,
)

__all__ = [
    "HDR_HIGHEST_US",
    "HDR_LOWEST_US",
    "HDR_SIGNIFICANT_DIGITS",
    "LATENCY_KEYS",
    "LagTrend",
    "PointResult",
    "SearchPoint",
    "SearchResult",
    "SustainVerdict",
    "Verdict",
    "aggregate_repetitions",
    "burst_recovery",
    "burst_recovery_detail",
    "check_validity",
    "column",
    "input_rate",
    "is_sustainable",
    "lag_trend",
    "latency_stats",
    "normalize_slo",
    "point_result_from_summary",
    "search_sustainable",
    "split_warmup",
    "summarize_point",
    "output_rate_bps",
    "throughput_bps",
    "timeline",
    "warmup_mask",
]
