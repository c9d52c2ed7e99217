"""Resolution honesty in the CLI table and report.html: broker-stamped values under 1 ms read "<1†"
with a footnote (never 0.00); the µs e2e at the collector is shown beside them; absent hops read "–"."""

from __future__ import annotations

import io

from rich.console import Console

from services.report.cells import td
from services.report.hops_section import hops_section
from services.report.resolution import FOOTNOTE, below_resolution, broker_stamped, marked
from services.runner.report import print_summary


def test_which_values_are_marked():
    assert broker_stamped("latency_ms.p50") and broker_stamped("hops_traced.hops_ms.e2e.mean")
    assert not broker_stamped("latency_ms.count") and not broker_stamped("latency_receive_ms.p50")
    assert not broker_stamped("hops_ms.decode.p50") and not broker_stamped("send_delay_ms.p50")
    assert below_resolution(0.0) and below_resolution(-0.4) and below_resolution(0.999)
    assert not below_resolution(1.0) and not below_resolution(float("nan")) and not below_resolution(None)
    assert not below_resolution(True) and not below_resolution("0.5")
    assert marked("latency_ms.p99", 0.5) and not marked("latency_ms.p99", 1.5) and not marked("x.p50", 0.5)


def test_report_cells_mark_sub_ms_broker_values_and_keep_the_rest():
    p = {"latency_ms": {"p50": 0.0, "p99": 2.5}, "latency_receive_ms": {"p50": 0.412}}
    cell = td(p, "latency_ms.p50")
    assert "&lt;1†" in cell and 'data-below-resolution="1"' in cell and 'data-key="latency_ms.p50"' in cell
    assert ">2.500<" in td(p, "latency_ms.p99") and ">0.412<" in td(p, "latency_receive_ms.p50")


def test_hops_section_names_absent_hops_and_draws_no_zero():
    p = {"hops_ms": {"produce": {"p50": None, "mean": None}, "e2e": {"p50": 12.0, "mean": 12.0},
                     "e2e_receive": {"p50": 12.4, "mean": 12.5}},
         "hops_traced": {"batches": 3, "hops_ms": {"e2e": {"p50": 12.0, "p99": 12.0, "mean": 12.0, "count": 3}},
                         "absent": ["produce", "wait", "decode", "score", "encode", "publish"],
                         "sum_check": {"complete_batches": 0}, "bottleneck": None}}
    html = hops_section(0, p)
    assert 'data-key="hops_traced.hops_ms.produce.p50">–<' in html
    assert 'data-key="hops_ms.produce.p50">–<' in html and ">12.400<" in html
    assert "absent (–): produce, wait, decode, score, encode, publish" in html
    assert "no batch has every hop" in html and "NOT within" not in html


def test_cli_table_marks_sub_ms_latencies_and_shows_the_collector_e2e():
    buf = io.StringIO()
    summary = {"experiment": "x", "points": [{
        "params": {"batch_size": 1}, "latency_ms": {"p50": 0.0, "p99": 2.5, "p999": 3.0, "max": 4.0},
        "latency_from_schedule_ms": {"p99": 0.7}, "latency_receive_ms": {"p50": 0.412},
        "accounting": {"sent": 3, "scored": 3, "unmatched": 0}, "valid": True}]}
    print_summary(summary, Console(file=buf, width=250))
    out = buf.getvalue()
    assert out.count("<1†") == 2 and "0.00 " not in out and "2.50" in out and "0.412" in out
    assert FOOTNOTE.split(":")[0] in out and "one host" in out
    buf2 = io.StringIO()
    summary["points"][0]["latency_ms"]["p50"] = 1.5
    summary["points"][0]["latency_from_schedule_ms"]["p99"] = 1.0
    print_summary(summary, Console(file=buf2, width=250))
    assert "<1†" not in buf2.getvalue() and FOOTNOTE.split(":")[0] not in buf2.getvalue()
