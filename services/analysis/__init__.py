"""Analysis of Crayfish Mesh runs: pure functions over the collector's per-batch table.

* :mod:`.columns` — column access (pyarrow Table or a mapping of arrays);
* :mod:`.stats` — latency, HDR statistics, input rate, throughput, output rate, timeline;
* :mod:`.warmup` — the warm-up cut;
* :mod:`.accounting` — where every sent batch ended;
* :mod:`.point` — row classes, validity and the per-point summary (result schema);
* :mod:`.sustain` — backlog trend, sustainability verdict, capacity search;
* :mod:`.bursts` — burst recovery time;
* :mod:`.hops` — per-hop medians from the stamps;
* :mod:`.repetitions` — mean ± sd over repetitions.

Each module's docstring states its exact definitions; docs/results.md collects them and
tests/unit/services/test_analysis.py proves each on a constructed case.
"""

from services.analysis.accounting import account, accounting_reasons
from services.analysis.bursts import burst_recovery, burst_recovery_detail, point_bursts
from services.analysis.hops import stamp_hops
from services.analysis.sending import send_report
from services.analysis.point import PointRules, Rows, check_validity, classify, summarize_point
from services.analysis.repetitions import aggregate_repetitions, combine_repetitions
from services.analysis.stats import (
    LATENCY_KEYS,
    input_rate,
    latency_ms,
    latency_stats,
    output_rate_bps,
    throughput_bps,
    timeline,
)
from services.analysis.sustain import (
    LagTrend,
    PointResult,
    SearchResult,
    SustainVerdict,
    is_sustainable,
    lag_trend,
    point_result_from_summary,
    search_sustainable,
)
from services.analysis.warmup import Warmup, split_warmup, warmup_mask

__all__ = [
    "LATENCY_KEYS", "LagTrend", "PointResult", "PointRules", "Rows", "SearchResult", "SustainVerdict", "Warmup",
    "account", "accounting_reasons", "aggregate_repetitions", "burst_recovery", "burst_recovery_detail",
    "check_validity", "classify", "combine_repetitions", "input_rate", "is_sustainable", "lag_trend",
    "latency_ms", "latency_stats", "output_rate_bps", "point_bursts", "point_result_from_summary",
    "search_sustainable", "send_report", "split_warmup", "stamp_hops", "summarize_point", "throughput_bps", "timeline",
    "warmup_mask",
]
