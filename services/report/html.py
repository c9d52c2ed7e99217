"""The run report: one self-contained HTML file (inline CSS and SVG, no script, no external asset).

Sections: run header and overview table (every point, linked), search verdicts, then one section
per point: verdict with reasons, latency percentiles (latency and latency from schedule, warm-up
apart), CDF, latency / throughput / consumer-lag timelines with warm-up and burst (recovery) marks,
per-hop stacked bars, accounting, resources (CPU, RSS per service), run facts; the manifest last,
collapsed.

Every number cell of a table carries ``data-key`` (its path in the summary point, e.g.
``latency_ms.p99``), so a reader (or a test) can tie what is shown back to summary.json.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from services.report import resolution, svg
from services.report.cells import badge, num, td
from services.report.hops_section import hops_section
from services.report.model import model_section
from services.report.data import (
    Rep,
    Run,
    cdf,
    get,
    load_rep,
    load_run,
    per_second,
    point_label,
    rate_per_second,
    rep_dirs,
    service_resources,
)

PCTS = (("p50", "p50"), ("p90", "p90"), ("p95", "p95"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max"),
        ("mean", "mean"))
ACCOUNTING = ("sent", "scored", "dead_lettered", "missing", "duplicates", "not_sent", "unmatched", "checked", "wrong")

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9;
 font-size:14px;line-height:1.45}
header.top{background:#12263a;color:#fff;padding:18px 28px}
header.top h1{margin:0 0 4px;font-size:22px}
header.top .meta{opacity:.85;font-size:13px}
main{padding:10px 28px 40px;max-width:1500px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:14px 18px;margin:16px 0}
h2{font-size:18px;margin:4px 0 10px}
h3{font-size:15px;margin:18px 0 6px;color:#333}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #e1e4e8;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f0f2f5;font-weight:600}
td.l,th.l{text-align:left}
.sd{color:#888;font-size:11px;margin-left:3px}
.badge{display:inline-block;padding:2px 9px;border-radius:11px;font-weight:600;font-size:12px}
.ok{background:#d4f4dd;color:#135d26}.bad{background:#fde2e1;color:#8a1c1c}.na{background:#eee;color:#555}
.verdict{margin:6px 0}
.verdict ul{margin:4px 0 4px 18px;padding:0}
.params span{display:inline-block;background:#eef2f7;border-radius:4px;padding:1px 6px;margin:2px 4px 2px 0;
 font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.charts svg{border:1px solid #eee;border-radius:4px}
details>summary{cursor:pointer;font-weight:600;margin:6px 0}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px;max-height:600px}
.note{color:#666;font-size:12px}
.wide{overflow-x:auto}
nav a{margin-right:10px}
"""


def write_report(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Write ``run_dir/report.html`` (or ``out``) and return its path."""
    run = load_run(run_dir)
    path = Path(out) if out else run.dir / "report.html"
    path.write_text(render_report(run), encoding="utf-8")
    return path


def render_report(run: Run) -> str:
    s = run.summary
    points = s.get("points", [])
    labels = [point_label(run, i, p) for i, p in enumerate(points)]
    body = [_header(run), model_section(s.get("model"))]
    body.append(_overview(points, labels))
    searches = _searches(s, points, labels)
    if searches:
        body.append(searches)
    for i, p in enumerate(points):
        body.append(_point_section(run, i, p, labels[i]))
    if any("data-below-resolution" in b for b in body):
        body.append(f'<section id="resolution"><p class="note" data-note="resolution">'
                    f'{escape(resolution.FOOTNOTE)}</p></section>')
    body.append(_manifest(run))
    return page(f"Crayfish run {s.get('experiment', '')}", "".join(body))


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<style>{CSS}</style></head><body>{body}</body></html>')


def _header(run: Run) -> str:
    s, m = run.summary, run.manifest
    git = m.get("git") or {}
    host = m.get("host") or {}
    bits = [f"started {escape(str(s.get('started', '?')))}", f"finished {escape(str(s.get('finished', '?')))}",
            f"wall {num(s.get('wall_s'), 1)} s", f"folder {escape(str(run.dir))}"]
    if git:
        bits.append(f"git {escape(str(git.get('revision', ''))[:10])}{' (dirty)' if git.get('dirty') else ''}")
    if host:
        bits.append(f"host {escape(str(host.get('cpu_model', '')))} × {escape(str(host.get('cpu_count', '?')))} cpus, "
                    f"{escape(str(host.get('memory_gib', '?')))} GiB")
    return (f'<header class="top"><h1>{escape(str(s.get("experiment", "run")))}</h1>'
            f'<div class="meta">{" · ".join(bits)}</div></header><main>')


def _kind(p: dict) -> str:
    params = p.get("params") or {}
    return "search" if params.get("search") else str(params.get("workload", ""))


def _serving(p: dict) -> str:
    params = p.get("params") or {}
    if params.get("serving_kind") == "external":
        return f"{params.get('server')}/{params.get('call_mode')}"
    return str(params.get("backend", ""))


def _overview(points: list[dict], labels: list[str]) -> str:
    rows = []
    for i, p in enumerate(points):
        params = p.get("params") or {}
        sust = p.get("sustainable") if isinstance(p.get("sustainable"), dict) else None
        rows.append(
            f'<tr data-point="{i}"><td class="l"><a href="#point-{i}">{i}</a></td>'
            f'<td class="l"><a href="#point-{i}">{escape(labels[i])}</a></td><td class="l">{escape(_kind(p))}</td>'
            f'<td class="l">{escape(_serving(p))}</td><td>{escape(str(params.get("batch_size", "")))}</td>'
            f'<td>{escape(str(params.get("parallelism", "")))}</td><td>{num(params.get("rate"), 0)}</td>'
            + "".join(td(p, k, nd, with_sd=False) for k, nd in (
                ("throughput_bps", 1), ("latency_ms.p50", 3), ("latency_ms.p99", 3), ("latency_ms.p999", 3),
                ("latency_from_schedule_ms.p99", 3), ("accounting.sent", 0), ("accounting.scored", 0),
                ("accounting.missing", 0)))
            + f'<td>{badge(p.get("valid"), "valid", "invalid")}</td>'
            + f'<td>{badge(sust.get("ok") if sust else None, "yes", "no") if sust else ""}</td></tr>')
    table = ('<table class="overview" data-table="overview"><tr><th>#</th><th class="l">point</th><th class="l">kind</th>'
             '<th class="l">serving</th><th>bsz</th><th>mp</th><th>rate/s</th><th>throughput b/s</th><th>p50 ms</th>'
             '<th>p99 ms</th><th>p99.9 ms</th><th>sched p99 ms</th><th>sent</th><th>scored</th><th>missing</th>'
             '<th>validity</th><th>sustainable</th></tr>' + "".join(rows) + "</table>")
    chart = ""
    if len(points) > 1:
        chart = '<div class="charts">' + svg.grouped_bars(
            [lab for lab in labels],
            [("p50", [get(p, "latency_ms.p50") for p in points]),
             ("p99", [get(p, "latency_ms.p99") for p in points]),
             ("p99 from schedule", [get(p, "latency_from_schedule_ms.p99") for p in points])],
            name="overview-latency", title="Latency per point (ms, log scale)", y_label="ms", y_log=True,
            width=max(620, 90 * len(points))) + svg.grouped_bars(
            labels, [("throughput b/s", [p.get("throughput_bps") for p in points])],
            name="overview-throughput", title="Throughput per point (batches/s)", y_label="batches/s",
            width=max(620, 90 * len(points))) + "</div>"
    return (f'<section id="overview"><h2>Overview: {len(points)} point(s)</h2><div class="wide">{table}</div>'
            f'{chart}</section>')


def _searches(s: dict, points: list[dict], labels: list[str]) -> str:
    found = []
    if "search" in s:
        found.append(({}, s["search"]))
    for f in s.get("searches", []) or []:
        found.append((f.get("params") or {}, f))
    if not found:
        return ""
    parts = ['<section id="search"><h2>Sustainable-throughput search</h2>']
    for k, (over, res) in enumerate(found):
        label = ", ".join(f"{a}={b}" for a, b in over.items())
        crit = res.get("criteria") or {}
        parts.append(f'<h3>Search{(" (" + escape(label) + ")") if label else ""}: '
                     f'<span data-key="sustainable_rate">{num(res.get("sustainable_rate"), 1)}</span> batches/s '
                     f'{badge(res.get("status") == "converged", str(res.get("status")), str(res.get("status")))}</h3>')
        parts.append(f'<p class="note">upper (first failing) rate {num(res.get("upper"), 1)} /s, precision '
                     f'{num(100 * (res.get("precision") or 0), 0)} %, criteria: output ≥ '
                     f'{num(crit.get("rate_fraction"), 2)} × rate, lag {escape(str(crit.get("lag", "")))}'
                     f'{", SLO " + escape(json.dumps(crit.get("slo"))) if crit.get("slo") else ""}</p>')
        rows, xs_ok, ys_ok, xs_bad, ys_bad = [], [], [], [], []
        for t in res.get("tried", []):
            idx = _find_search_point(points, over, t.get("rate"))
            p = points[idx] if idx is not None else {}
            link = f'<a href="#point-{idx}">{escape(labels[idx])}</a>' if idx is not None else "–"
            reasons = "; ".join((p.get("sustainable") or {}).get("reasons", []) + p.get("reasons", []))
            rows.append(f'<tr><td>{num(t.get("rate"), 1)}</td><td class="l">{escape(str(t.get("phase")))}</td>'
                        f'<td>{badge(t.get("sustainable"), "sustainable", "not sustainable")}</td>'
                        f'<td>{num(p.get("throughput_bps"), 1)}</td><td>{num(get(p, "latency_ms.p99"))}</td>'
                        f'<td class="l">{link}</td><td class="l">{escape(reasons)}</td></tr>')
            (xs_ok if t.get("sustainable") else xs_bad).append(t.get("rate"))
            (ys_ok if t.get("sustainable") else ys_bad).append(p.get("throughput_bps"))
        parts.append('<table data-table="search"><tr><th>rate/s</th><th class="l">phase</th><th>verdict</th>'
                     '<th>output b/s</th><th>p99 ms</th><th class="l">point</th><th class="l">reasons</th></tr>'
                     + "".join(rows) + "</table>")
        rates = [r for r in xs_ok + xs_bad if r]
        if rates:
            diag = [min(rates) * 0.9, max(rates) * 1.1]
            vl = [{"x": res["sustainable_rate"], "color": "#2ca02c", "label": "sustainable rate"}] \
                if res.get("sustainable_rate") else []
            parts.append('<div class="charts">' + svg.line_chart(
                [{"name": "output = rate", "x": diag, "y": diag, "color": "#aaa", "dash": "4 3"},
                 {"name": "sustainable", "x": xs_ok, "y": ys_ok, "color": "#2ca02c", "markers": True},
                 {"name": "not sustainable", "x": xs_bad, "y": ys_bad, "color": "#d62728", "markers": True}],
                name=f"search-{k}", title="Rates tried: output rate vs offered rate", x_label="offered rate (batches/s)",
                y_label="output batches/s", x_log=True, y_log=True, vlines=vl) + "</div>")
    parts.append("</section>")
    return "".join(parts)


def _find_search_point(points: list[dict], over: dict, rate: Any) -> int | None:
    for i, p in enumerate(points):
        params = p.get("params") or {}
        if params.get("search") and params.get("rate") is not None and rate is not None \
                and abs(float(params["rate"]) - float(rate)) < 1e-6 \
                and all(params.get(k) == v for k, v in over.items()):
            return i
    return None


def _percentile_table(p: dict) -> str:
    head = "".join(f"<th>{lab}</th>" for _, lab in PCTS)
    rows = []
    for key, title in (("latency_ms", "latency (output append − created)"),
                       ("latency_from_schedule_ms", "latency from schedule (output append − intended)"),
                       ("send_delay_ms", "send delay (created − intended)"),
                       ("latency_receive_ms", f"e2e at the collector ({resolution.RECEIVE_NOTE})"),
                       ("warmup.latency_ms", "warm-up latency (excluded)")):
        if get(p, key) is None:
            continue
        rows.append(f'<tr data-row="{key}"><td class="l">{escape(title)}</td>'
                    + "".join(td(p, f"{key}.{k}") for k, _ in PCTS) + td(p, f"{key}.count", 0) + "</tr>")
    return (f'<table data-table="percentiles"><tr><th class="l">ms</th>{head}<th>count</th></tr>'
            + "".join(rows) + "</table>")


def _verdicts(p: dict) -> str:
    out = ['<div class="verdict">', badge(p.get("valid"), "valid", "invalid")]
    if p.get("reasons"):
        out.append("<ul data-list=\"reasons\">" + "".join(f"<li>{escape(str(r))}</li>" for r in p["reasons"]) + "</ul>")
    else:
        out.append(' <span class="note">window, count, input rate, accounting: all within the validity rules</span>')
    out.append("</div>")
    sust = p.get("sustainable")
    if isinstance(sust, dict) and "ok" in sust:
        out.append('<div class="verdict">' + badge(sust.get("ok"), "sustainable", "not sustainable"))
        bits = []
        if sust.get("output_rate") is not None:
            bits.append(f"output {num(sust.get('output_rate'), 1)}/s vs required {num(sust.get('required_rate'), 1)}/s "
                        f"(target {num(sust.get('target_rate'), 1)}/s)")
        lag = sust.get("lag") or {}
        if lag:
            bits.append(f"lag slope {num(lag.get('slope'), 2)}/s (threshold {num(lag.get('threshold'), 2)}, "
                        f"{'rising' if lag.get('rising') else 'not rising'})")
        out.append(f' <span class="note">{escape("; ".join(bits))}</span>')
        if sust.get("reasons"):
            out.append("<ul>" + "".join(f"<li>{escape(str(r))}</li>" for r in sust["reasons"]) + "</ul>")
        out.append("</div>")
    return "".join(out)


def _point_section(run: Run, i: int, p: dict, label: str) -> str:
    params = p.get("params") or {}
    dirs = rep_dirs(run, i, p)
    reps = [load_rep(d, p) for d in dirs]
    out = [f'<section id="point-{i}" class="point" data-point="{i}"><h2>Point {i}: {escape(label)}</h2>',
           '<div class="params">' + "".join(f"<span>{escape(str(k))}={escape(str(v))}</span>"
                                            for k, v in params.items()) + "</div>",
           f'<p>throughput <b data-key="throughput_bps">{num(p.get("throughput_bps"), 1)}</b> batches/s · '
           f'measured window {num(get(p, "measured.window_s"), 2)} s, {num(get(p, "measured.count"), 0)} kept '
           f'batches · repetitions {escape(str(p.get("repetitions", 1)))}</p>',
           "<h3>Validity</h3>", _verdicts(p),
           "<h3>Latency percentiles</h3>", _percentile_table(p)]
    if p.get("repetitions", 1) > 1:
        out.append('<p class="note">mean ± sample sd across repetitions.</p>')
    # CDF
    series = []
    for r, rep in enumerate(reps):
        suffix = f" (rep {r})" if len(reps) > 1 else ""
        x, y = cdf(rep.latency)
        series.append({"name": "latency" + suffix, "x": x, "y": y, "color": svg.color(2 * r)})
        x, y = cdf(rep.latency_sched)
        series.append({"name": "from schedule" + suffix, "x": x, "y": y, "color": svg.color(2 * r + 1), "dash": "5 3"})
    out.append('<div class="charts">' + cdf_chart(series, f"cdf-{i}", "Latency CDF (measured window)") + "</div>")
    # timelines per repetition
    for r, rep in enumerate(reps):
        charts = _timelines(i, r, rep, p)
        if len(reps) > 1:
            out.append(f'<details{" open" if r == 0 else ""}><summary>Timelines, repetition {r}</summary>'
                       f'{charts}</details>')
        else:
            out.append("<h3>Timelines</h3>" + charts)
    if not reps:
        out.append('<p class="note">no repetition folder found: timelines and CDF need the raw files</p>')
    out.append(_bursts(p, reps))
    out.append(hops_section(i, p))
    out.append("<h3>Accounting</h3>" + _accounting(p))
    out.append(_resources(i, p, reps))
    out.append(_facts(p, dirs))
    out.append("</section>")
    return "".join(out)


def cdf_chart(series: list[dict], name: str, title: str) -> str:
    xs = [x for s in series for x in s["x"] if x is not None]
    if not xs:
        return svg.line_chart([], name=name, title=title)
    pos = [x for x in xs if x > 0]
    use_log = bool(pos) and max(xs) / max(min(pos), 1e-3) > 30
    if use_log:
        floor = max(min(pos), 0.01)
        series = [{**s, "x": [max(x, floor) for x in s["x"]]} for s in series]
    note = " (log x; values ≤ 0 drawn at the smallest positive)" if use_log else ""
    return svg.line_chart(series, name=name, title=title + note, x_label="latency (ms)", y_label="fraction ≤ x",
                          x_log=use_log, y_range=(0.0, 1.0), width=760, height=300,
                          hlines=[{"y": 0.99, "label": "p99", "color": "#999"}])


def _burst_marks(p: dict, rep: Rep) -> tuple[list[dict], list[dict]]:
    bursts = rep.summary.get("bursts") or p.get("bursts") or []
    bands, vlines = [], []
    for b in bursts:
        bands.append({"x0": b["start_s"], "x1": b["end_s"], "color": "#f5a3a3", "label": "burst"})
        if b.get("recovery_s") is not None:
            vlines.append({"x": b["end_s"] + b["recovery_s"], "color": "#2ca02c",
                           "label": f"recovered +{b['recovery_s']:.1f} s"})
        else:
            vlines.append({"x": b["end_s"], "color": "#d62728", "label": "not recovered"})
    return bands, vlines


def _timelines(i: int, r: int, rep: Rep, p: dict) -> str:
    if not rep.has_batches:
        return '<p class="note">no batches.parquet in the repetition folder</p>'
    bands, marks = _burst_marks(p, rep)
    vl = list(marks)
    if rep.warmup_end_s is not None:
        vl.insert(0, {"x": rep.warmup_end_s, "color": "#777", "label": "warm-up end", "dash": "2 2"})
    xl = "seconds since the schedule start"
    ends = [float(a.max()) for a in (rep.out_s, rep.created_s) if len(a)]
    if rep.lag is not None and len(rep.lag[0]):
        ends.append(float(rep.lag[0].max()))
    xr = (min(0.0, *(float(a.min()) for a in (rep.out_s, rep.created_s) if len(a))), max(ends)) if ends else None
    lat = per_second(rep.out_s, rep.lat_all)
    sch = per_second(rep.out_s, rep.sched_all)
    charts = [svg.line_chart(
        [{"name": "median latency", "x": lat["t"], "y": lat["p50"]},
         {"name": "p99 latency", "x": lat["t"], "y": lat["p99"], "color": svg.color(1)},
         {"name": "p99 from schedule", "x": sch["t"], "y": sch["p99"], "color": svg.color(3), "dash": "5 3"}],
        name=f"latency-timeline-{i}-{r}", title="Latency per second of output (ms)", x_label=xl, y_label="ms",
        bands=bands, vlines=vl, x_range=xr)]
    tx, ty = rate_per_second(rep.out_s)
    ix, iy = rate_per_second(rep.created_s)
    target = get(rep.summary, "measured.target_rate")
    charts.append(svg.line_chart(
        [{"name": "output batches/s", "x": tx, "y": ty, "step": False},
         {"name": "input (created) batches/s", "x": ix, "y": iy, "color": svg.color(4), "dash": "5 3"}],
        name=f"throughput-timeline-{i}-{r}", title="Throughput per second", x_label=xl, y_label="batches/s",
        bands=bands, vlines=vl, hlines=[{"y": target, "label": "target"}] if target else [], x_range=xr))
    if rep.lag is not None:
        charts.append(svg.line_chart(
            [{"name": "consumer lag (worker group, input topic)", "x": rep.lag[0].tolist(),
              "y": rep.lag[1].tolist(), "step": True, "color": svg.color(5)}],
            name=f"lag-timeline-{i}-{r}", title="Consumer lag (records)", x_label=xl, y_label="records",
            bands=bands, vlines=vl, x_range=xr))
    return '<div class="charts">' + "".join(charts) + "</div>"


def _bursts(p: dict, reps: list[Rep]) -> str:
    rows = []
    for r, rep in enumerate(reps or [None]):
        bursts = (rep.summary.get("bursts") if rep else None) or (p.get("bursts") if r == 0 else None) or []
        where = f"per_repetition.{r}.bursts" if len(reps) > 1 else "bursts"
        for k, b in enumerate(bursts):
            rows.append(f'<tr><td>{r}</td><td>{k}</td><td>{num(b.get("start_s"), 1)}</td><td>{num(b.get("end_s"), 1)}</td>'
                        f'<td data-key="{where}.{k}.baseline_ms">{num(b.get("baseline_ms"))}</td>'
                        f'<td data-key="{where}.{k}.recovery_s">{num(b.get("recovery_s"), 2)}</td>'
                        f'<td class="l">{escape(b.get("reason") or "")}</td></tr>')
    if not rows:
        return ""
    return ('<h3>Burst recovery</h3><table data-table="bursts"><tr><th>rep</th><th>burst</th><th>start s</th>'
            '<th>end s</th><th>baseline ms</th><th>recovery s</th><th class="l">note</th></tr>' + "".join(rows)
            + '</table><p class="note">recovery = seconds from the burst end until the 1 s windowed latency median '
              'stays within tolerance of the pre-burst baseline for the hold time (docs/results.md).</p>')


def _accounting(p: dict) -> str:
    acc = p.get("accounting") or {}
    keys = [k for k in ACCOUNTING if k in acc] + [k for k in acc if k not in ACCOUNTING]
    return ('<table data-table="accounting"><tr>' + "".join(f"<th>{escape(k)}</th>" for k in keys) + "</tr><tr>"
            + "".join(td(p, f"accounting.{k}", 0) for k in keys) + "</tr></table>")


def _resources(i: int, p: dict, reps: list[Rep]) -> str:
    res = p.get("resources") or {}
    per = service_resources(p)
    out = ["<h3>Resources</h3>"]
    if "worker_cpu_s" in res:
        out.append(f'<p>worker CPU <b data-key="resources.worker_cpu_s">{num(res.get("worker_cpu_s"), 2)}</b> s, '
                   f'<span data-key="resources.worker_cpu_per_batch_us">{num(res.get("worker_cpu_per_batch_us"), 1)}'
                   f'</span> µs per scored batch</p>')
    if per:
        rows = "".join(f'<tr><td class="l">{escape(name)}</td>' + td(p, f"resources.{name}.cpu_mean_pct", 1)
                       + td(p, f"resources.{name}.cpu_max_pct", 1) + td(p, f"resources.{name}.rss_max_mb", 1)
                       + td(p, f"resources.{name}.samples", 0) + "</tr>" for name in per)
        out.append('<table data-table="resources"><tr><th class="l">service (process tree)</th><th>CPU mean %</th>'
                   f'<th>CPU max %</th><th>RSS max MiB</th><th>samples</th></tr>{rows}</table>'
                   '<p class="note">100 % = one core; sampled every 0.5 s from the collector being ready until '
                   'the services stop (resources.parquet).</p>')
    for r, rep in enumerate(reps):
        if not rep.resources:
            continue
        names = list(rep.resources)
        bands, marks = _burst_marks(p, rep)
        cpu = [{"name": n, "x": rep.resources[n]["t"].tolist(), "y": rep.resources[n]["cpu"].tolist(),
                "color": svg.color(k)} for k, n in enumerate(names)]
        rss = [{"name": n, "x": rep.resources[n]["t"].tolist(), "y": rep.resources[n]["rss"].tolist(),
                "color": svg.color(k)} for k, n in enumerate(names)]
        suffix = f" (rep {r})" if len(reps) > 1 else ""
        out.append('<div class="charts">' + svg.line_chart(
            cpu, name=f"cpu-{i}-{r}", title="CPU per service (% of one core)" + suffix,
            x_label="seconds since the schedule start", y_label="%", bands=bands) + svg.line_chart(
            rss, name=f"rss-{i}-{r}", title="Resident memory per service (MiB)" + suffix,
            x_label="seconds since the schedule start", y_label="MiB", bands=bands) + "</div>")
    if len(out) == 1:
        out.append('<p class="note">no resource samples in this run.</p>')
    return "".join(out)


def _facts(p: dict, dirs: list[Path]) -> str:
    gen = p.get("generator") or {}
    skew = p.get("clock_skew_ms") or {}
    m = p.get("measured") or {}
    rows = [
        ("generator target / achieved rate (b/s)", f"{num(gen.get('target_rate_bps'), 1)} / "
                                                  f"{num(gen.get('achieved_rate_bps'), 1)}"),
        ("generator processes", num(gen.get("processes"), 0)),
        ("measured input rate / schedule rate (b/s)", f"{num(m.get('input_rate_bps'), 1)} / "
                                                     f"{num(m.get('schedule_rate_bps'), 1)}"),
        ("clock skew bound broker − generator (ms)", f"[{num(skew.get('lower_ms'))}, {num(skew.get('upper_ms'))}] "
                                                     f"({num(skew.get('probes'), 0)} probes)"),
        ("warm-up", f"{num(get(p, 'warmup.count'), 0)} records, policy {escape(str(get(p, 'warmup.policy', '')))}"),
        ("answered by", escape(", ".join(p.get("answered_by") or []) or "embedded")),
        ("run id", escape(str(p.get("run_id", "")))),
        ("raw files", escape(", ".join(str(d) for d in dirs))),
    ]
    lag = p.get("lag") or {}
    if lag:
        rows.append(("consumer lag trend", f"slope {num(lag.get('slope'), 2)}/s, threshold {num(lag.get('threshold'), 2)}, "
                                          f"{'rising' if lag.get('rising') else 'not rising'} ({num(lag.get('n'), 0)} samples)"))
    return ('<details><summary>Run facts</summary><table data-table="facts">'
            + "".join(f'<tr><th class="l">{escape(k)}</th><td class="l">{v}</td></tr>' for k, v in rows)
            + "</table></details>")


def _manifest(run: Run) -> str:
    text = json.dumps(run.manifest, indent=2) if run.manifest else "(no manifest.json)"
    return (f'<section id="manifest"><details><summary>manifest.json</summary><pre>{escape(text)}</pre>'
            f'</details></section></main>')
