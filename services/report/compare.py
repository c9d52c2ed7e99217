"""Compare two runs point by point (``crayfish compare RUN_A RUN_B``).

Points match when their ``params`` are equal (the sweep values, batch size, parallelism, model,
engine, backend, codec, workload, and for search points the rate). For every matched point: throughput,
latency and latency-from-schedule percentiles, per-hop medians (traced hops when both runs have
them, else the stamp medians), CPU per service, validity and the sustainability verdict, each with
the ratio B/A. Searches match on their sweep parameters and compare the sustainable rate.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

from rich.table import Table

from services.report import svg
from services.report.data import (
    HOPS,
    cdf,
    get,
    hop_medians,
    load_rep,
    load_run,
    point_label,
    rep_dirs,
    service_resources,
)
from services.report.html import cdf_chart, page  # one style and one CDF for both pages

LATENCY = (("p50", "p50"), ("p90", "p90"), ("p95", "p95"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max"),
           ("mean", "mean"))


def _key(p: dict) -> str:
    return json.dumps(p.get("params") or {}, sort_keys=True, default=str)


def ratio(a: Any, b: Any) -> float | None:
    try:
        fa, fb = float(a), float(b)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(fa) and math.isfinite(fb)) or fa == 0:
        return None
    return fb / fa


def _rows(pa: dict, pb: dict) -> list[dict]:
    rows: list[dict] = []

    def add(metric: str, a: Any, b: Any, group: str, nd: int = 3, numeric: bool = True):
        rows.append({"metric": metric, "group": group, "a": a, "b": b, "nd": nd,
                     "ratio": ratio(a, b) if numeric else None, "numeric": numeric})

    add("throughput (batches/s)", pa.get("throughput_bps"), pb.get("throughput_bps"), "throughput", 1)
    for k, lab in LATENCY:
        add(f"latency {lab} (ms)", get(pa, f"latency_ms.{k}"), get(pb, f"latency_ms.{k}"), "latency")
    for k, lab in LATENCY:
        add(f"from schedule {lab} (ms)", get(pa, f"latency_from_schedule_ms.{k}"),
            get(pb, f"latency_from_schedule_ms.{k}"), "schedule")
    ha, sa = hop_medians(pa)
    hb, sb = hop_medians(pb)
    if sa != sb:  # compare like with like: the stamp medians exist in both
        ha, hb = {h: get(pa, f"hops_ms.{h}.p50") for h in (*HOPS, "e2e")}, \
                 {h: get(pb, f"hops_ms.{h}.p50") for h in (*HOPS, "e2e")}
        sa = "stamps"
    for h in (*HOPS, "e2e"):
        if ha.get(h) is not None or hb.get(h) is not None:
            add(f"hop {h} p50 (ms, {sa})", ha.get(h), hb.get(h), "hops")
    add("worker CPU (s)", get(pa, "resources.worker_cpu_s"), get(pb, "resources.worker_cpu_s"), "resources", 2)
    ra, rb = service_resources(pa), service_resources(pb)
    for name in [n for n in ra if n in rb]:
        add(f"{name} CPU mean (%)", ra[name].get("cpu_mean_pct"), rb[name].get("cpu_mean_pct"), "resources", 1)
        add(f"{name} RSS max (MiB)", ra[name].get("rss_max_mb"), rb[name].get("rss_max_mb"), "resources", 1)
    add("valid", pa.get("valid"), pb.get("valid"), "verdict", numeric=False)
    if isinstance(pa.get("sustainable"), dict) or isinstance(pb.get("sustainable"), dict):
        add("sustainable", (pa.get("sustainable") or {}).get("ok"), (pb.get("sustainable") or {}).get("ok"),
            "verdict", numeric=False)
    return rows


def compare_runs(run_a: Path | str, run_b: Path | str) -> dict:
    a, b = load_run(run_a), load_run(run_b)
    pts_a, pts_b = a.summary.get("points", []), b.summary.get("points", [])
    by_key_b: dict[str, list[int]] = {}
    for j, p in enumerate(pts_b):
        by_key_b.setdefault(_key(p), []).append(j)
    matched, only_a, used_b = [], [], set()
    for i, p in enumerate(pts_a):
        js = [j for j in by_key_b.get(_key(p), []) if j not in used_b]
        if not js:
            only_a.append({"index": i, "label": point_label(a, i, p)})
            continue
        j = js[0]
        used_b.add(j)
        matched.append({"index_a": i, "index_b": j, "label": point_label(a, i, p), "params": p.get("params") or {},
                        "rows": _rows(p, pts_b[j])})
    only_b = [{"index": j, "label": point_label(b, j, p)} for j, p in enumerate(pts_b) if j not in used_b]
    searches = []
    sa, sb = _searches(a.summary), _searches(b.summary)
    for key, fa in sa.items():
        if key in sb:
            fb = sb[key]
            searches.append({"params": json.loads(key), "a": fa.get("sustainable_rate"), "b": fb.get("sustainable_rate"),
                             "status_a": fa.get("status"), "status_b": fb.get("status"),
                             "ratio": ratio(fa.get("sustainable_rate"), fb.get("sustainable_rate"))})
    return {"a": {"name": a.name, "dir": str(a.dir), "experiment": a.summary.get("experiment")},
            "b": {"name": b.name, "dir": str(b.dir), "experiment": b.summary.get("experiment")},
            "matched": matched, "only_a": only_a, "only_b": only_b, "searches": searches}


def _searches(summary: dict) -> dict[str, dict]:
    out = {}
    if "search" in summary:
        out[json.dumps({})] = summary["search"]
    for f in summary.get("searches", []) or []:
        out[json.dumps(f.get("params") or {}, sort_keys=True, default=str)] = f
    return out


def fmt(v: Any, nd: int = 3) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if v is None:
        return "–"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "–" if not math.isfinite(f) else f"{f:,.{nd}f}"


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.3f}×"


def print_comparison(result: dict, console) -> None:
    a, b = result["a"]["name"], result["b"]["name"]
    console.print(f"A = [bold]{a}[/] ({result['a']['experiment']}), B = [bold]{b}[/] ({result['b']['experiment']}): "
                  f"{len(result['matched'])} matching point(s)")
    for m in result["matched"]:
        t = Table(title=f"point {m['label']} (A #{m['index_a']}, B #{m['index_b']})", title_justify="left")
        t.add_column("metric", justify="left")
        for col in ("A", "B", "B/A"):
            t.add_column(col, justify="right")
        for r in m["rows"]:
            style = ""
            if r["group"] == "verdict" and r["a"] != r["b"]:
                style = "bold red"
            t.add_row(r["metric"], fmt(r["a"], r["nd"]), fmt(r["b"], r["nd"]), fmt_ratio(r["ratio"]), style=style)
        console.print(t)
    for s in result["searches"]:
        label = ", ".join(f"{k}={v}" for k, v in s["params"].items()) or "search"
        console.print(f"sustainable throughput ({label}): A {fmt(s['a'], 1)} ({s['status_a']}), "
                      f"B {fmt(s['b'], 1)} ({s['status_b']}), B/A {fmt_ratio(s['ratio'])}")
    for side, key in (("A", "only_a"), ("B", "only_b")):
        if result[key]:
            console.print(f"only in {side}: " + ", ".join(f"#{x['index']} {x['label']}" for x in result[key]))


def write_comparison_html(result: dict, out: Path | str) -> Path:
    a_run, b_run = load_run(result["a"]["dir"]), load_run(result["b"]["dir"])
    an, bn = result["a"]["name"], result["b"]["name"]
    body = [f'<header class="top"><h1>Compare runs: A = {escape(an)}, B = {escape(bn)}</h1>'
            f'<div class="meta">A: {escape(result["a"]["dir"])} ({escape(str(result["a"]["experiment"]))}) · '
            f'B: {escape(result["b"]["dir"])} ({escape(str(result["b"]["experiment"]))}) · ratios are B/A</div>'
            f'</header><main>', _overview(result)]
    pts_a, pts_b = a_run.summary.get("points", []), b_run.summary.get("points", [])
    for k, m in enumerate(result["matched"]):
        body.append(_point_section(k, m, a_run, b_run, pts_a[m["index_a"]], pts_b[m["index_b"]]))
    body.append("</main>")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(f"Compare {an} vs {bn}", "".join(body)), encoding="utf-8")
    return path


def _overview(result: dict) -> str:
    """The matching points with their key ratios, the ratio chart, unmatched points, searches."""
    rows = []
    for k, m in enumerate(result["matched"]):
        r = {x["metric"]: x for x in m["rows"]}
        cells = []
        for metric in ("throughput (batches/s)", "latency p50 (ms)", "latency p99 (ms)", "from schedule p99 (ms)"):
            x = r.get(metric) or {}
            cells.append(f'<td>{fmt(x.get("a"), x.get("nd", 3))}</td><td>{fmt(x.get("b"), x.get("nd", 3))}</td>'
                         f'<td data-ratio="{escape(metric)}">{fmt_ratio(x.get("ratio"))}</td>')
        v = r.get("valid") or {}
        rows.append(f'<tr><td class="l"><a href="#cmp-{k}">{escape(m["label"])}</a></td>{"".join(cells)}'
                    f'<td>{fmt(v.get("a"))} / {fmt(v.get("b"))}</td></tr>')
    head = "".join(f'<th colspan="3">{escape(t)}</th>' for t in ("throughput b/s", "p50 ms", "p99 ms", "sched p99 ms"))
    sub = "<th>A</th><th>B</th><th>B/A</th>" * 4
    out = [f'<section id="overview"><h2>Matching points: {len(result["matched"])}</h2><div class="wide">'
           f'<table data-table="compare-overview"><tr><th class="l" rowspan="2">point</th>{head}'
           f'<th rowspan="2">valid A / B</th></tr><tr>{sub}</tr>{"".join(rows)}</table></div>']
    if result["matched"]:
        labels = [m["label"] for m in result["matched"]]

        def ratios(metric):
            return [next((x["ratio"] for x in m["rows"] if x["metric"] == metric), None) for m in result["matched"]]

        out.append('<div class="charts">' + svg.grouped_bars(
            labels, [("throughput B/A", ratios("throughput (batches/s)")), ("p50 B/A", ratios("latency p50 (ms)")),
                     ("p99 B/A", ratios("latency p99 (ms)"))],
            name="compare-ratios", title="Ratios B/A per point (log; bars start at 1 = equal)", y_label="B/A",
            y_log=True, baseline=1.0,
            width=max(620, 110 * len(labels))) + "</div>")
    for side, key in (("A", "only_a"), ("B", "only_b")):
        if result[key]:
            out.append(f'<p class="note">only in {side}: '
                       + escape(", ".join(f"#{x['index']} {x['label']}" for x in result[key])) + "</p>")
    for s in result["searches"]:
        label = ", ".join(f"{k}={v}" for k, v in s["params"].items()) or "search"
        out.append(f'<p>sustainable throughput ({escape(label)}): A {fmt(s["a"], 1)} ({escape(str(s["status_a"]))}), '
                   f'B {fmt(s["b"], 1)} ({escape(str(s["status_b"]))}), B/A <b>{fmt_ratio(s["ratio"])}</b></p>')
    out.append("</section>")
    return "".join(out)


def _point_section(k: int, m: dict, a_run, b_run, pa: dict, pb: dict) -> str:
    """One matched point: overlaid CDFs, percentile and hop bars, the table of every metric."""
    series = []
    for side, run, idx, p, col in (("A", a_run, m["index_a"], pa, 0), ("B", b_run, m["index_b"], pb, 1)):
        dirs = rep_dirs(run, idx, p)
        if not dirs:
            continue
        rep = load_rep(dirs[0], p)
        x, y = cdf(rep.latency)
        series.append({"name": f"{side} latency", "x": x, "y": y, "color": svg.color(col)})
        x, y = cdf(rep.latency_sched)
        series.append({"name": f"{side} from schedule", "x": x, "y": y, "color": svg.color(col), "dash": "5 3"})
    charts = [cdf_chart(series, f"cmp-cdf-{k}", "Latency CDF, A vs B (repetition 0)")]
    charts.append(svg.grouped_bars([lab for _, lab in LATENCY],
                                   [("A", [get(pa, f"latency_ms.{q}") for q, _ in LATENCY]),
                                    ("B", [get(pb, f"latency_ms.{q}") for q, _ in LATENCY])],
                                   name=f"cmp-pct-{k}", title="Latency percentiles (ms, log)", y_label="ms",
                                   y_log=True))
    hop_rows = [r for r in m["rows"] if r["group"] == "hops"]
    if hop_rows:
        charts.append(svg.grouped_bars([r["metric"].split()[1] for r in hop_rows],
                                       [("A", [r["a"] for r in hop_rows]), ("B", [r["b"] for r in hop_rows])],
                                       name=f"cmp-hops-{k}", title="Per-hop medians (ms)", y_label="ms"))
    trs = "".join(f'<tr><td class="l">{escape(r["metric"])}</td><td>{fmt(r["a"], r["nd"])}</td>'
                  f'<td>{fmt(r["b"], r["nd"])}</td><td data-ratio="{escape(r["metric"])}">{fmt_ratio(r["ratio"])}</td></tr>'
                  for r in m["rows"])
    return (f'<section id="cmp-{k}" class="point"><h2>{escape(m["label"])}</h2>'
            f'<div class="charts">{"".join(charts)}</div>'
            f'<table data-table="compare"><tr><th class="l">metric</th><th>A</th><th>B</th><th>B/A</th></tr>'
            f'{trs}</table></section>')


def default_out(run_a: Path | str, run_b: Path | str) -> Path:
    return Path(run_b) / f"compare-{Path(run_a).resolve().name}.html"
