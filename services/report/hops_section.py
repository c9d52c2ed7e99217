"""The report's per-hop section: traced hops (stacked bars, table, what ``score`` is made of, the sum
check) and the hop medians of every batch from the stamps. A hop whose stamps the outputs lack is
named as absent and shown as "–", never drawn as 0."""

from __future__ import annotations

from html import escape

from services.report import resolution, svg
from services.report.cells import num, td
from services.report.data import HOPS, get


def hops_section(i: int, p: dict) -> str:
    traced = p.get("hops_traced")
    stamps = p.get("hops_ms") or {}
    out = ["<h3>Where the time goes (per hop)</h3>"]
    if isinstance(traced, dict) and traced.get("hops_ms"):
        hm = traced["hops_ms"]
        rows = [("p50", [get(hm, f"{h}.p50") for h in HOPS]), ("mean", [get(hm, f"{h}.mean") for h in HOPS])]
        totals = [get(hm, "e2e.p50"), get(hm, "e2e.mean")]
        out.append('<div class="charts">' + svg.stacked_hbar(
            rows, HOPS, name=f"hops-{i}", title=f"Traced hops ({num(traced.get('batches'), 0)} batches; "
                                                f"black tick = end to end)", totals=totals) + "</div>")
        sc = traced.get("sum_check") or {}
        head = "".join(f"<th>{h}</th>" for h in (*HOPS, "e2e"))
        body = "".join(f'<tr><td class="l">{stat}</td>' + "".join(td(p, f"hops_traced.hops_ms.{h}.{stat}")
                                                                for h in (*HOPS, "e2e")) + "</tr>"
                       for stat in ("p50", "p99", "mean"))
        out.append(f'<table data-table="hops"><tr><th class="l">ms</th>{head}</tr>{body}</table>')
        parts = traced.get("score_parts_ms") or {}
        names = [k for k in ("client", "server_queue", "inference") if isinstance(parts.get(k), dict) and parts[k]]
        if names:  # external serving: what the score hop is made of
            out.append('<table data-table="score-parts"><tr><th class="l">score = (ms)</th>'
                       + "".join(f"<th>{escape(k)}</th>" for k in names) + "</tr>"
                       + "".join(f'<tr><td class="l">{stat}</td>'
                                 + "".join(td(p, f"hops_traced.score_parts_ms.{k}.{stat}") for k in names) + "</tr>"
                                 for stat in ("p50", "p99", "mean")) + "</table>")
        bottleneck = traced.get("bottleneck") or ", ".join(sorted(
            {str((r.get("hops_traced") or {}).get("bottleneck")) for r in p.get("per_repetition") or []}))
        ok = sc.get("ok")
        if not isinstance(ok, bool) and sc.get("residual_frac") is not None:  # a mean over repetitions
            ok = abs(sc["residual_frac"]) <= (sc.get("tolerance") or 0.05)
        if sc.get("e2e_mean_ms") is None:   # no batch has every hop (absent stamps): no sum to check
            summed = "no batch has every hop, so there is no sum to check"
        else:
            summed = (f'hops sum to {num(sc.get("hops_sum_mean_ms"))} ms vs e2e {num(sc.get("e2e_mean_ms"))} ms '
                      f'(mean; {"within" if ok else "NOT within"} 5 %)')
        out.append(f'<p class="note">bottleneck: <b>{escape(str(bottleneck))}</b>; {summed}. Negative values '
                   f'(1 ms broker stamps) are drawn as 0.</p>')
        out.append(_absent_note(traced.get("absent")))
    elif isinstance(traced, dict) and traced.get("error"):
        out.append(f'<p class="note">traced hops failed: {escape(traced["error"])}</p>')
    else:
        out.append('<p class="note">no traced batches (trace_sample 0 or no span files).</p>')
    if stamps:
        head = "".join(f"<th>{h}</th>" for h in stamps)
        out.append('<details><summary>Hop medians of every batch (broker and worker stamps)</summary>'
                   f'<table data-table="hops-stamps"><tr><th class="l">ms</th>{head}</tr>'
                   + "".join(f'<tr><td class="l">{stat}</td>' + "".join(td(p, f"hops_ms.{h}.{stat}") for h in stamps)
                             + "</tr>" for stat in ("p50", "mean"))
                   + '</table><p class="note">broker stamps have 1 ms resolution; medians need not add up. '
                     f'e2e_receive: {escape(resolution.RECEIVE_NOTE)}.</p>'
                   + _absent_note([h for h in stamps if get(stamps, f"{h}.p50") is None]) + '</details>')
    return "".join(out)


def _absent_note(hops: list | None) -> str:
    """Hops without a value (their stamps are absent from the outputs): named, never drawn as 0."""
    if not hops:
        return ""
    return (f'<p class="note" data-note="absent">absent (–): {escape(", ".join(map(str, hops)))}: the outputs '
            'carry no stamp for them (e.g. a pipeline of your own that writes no worker stamps).</p>')
