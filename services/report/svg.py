"""Inline SVG charts, no dependencies: line/step charts (linear or log axes, shaded bands, marker
lines), horizontal stacked bars and grouped vertical bars. Every chart is one ``<svg>`` string with
fixed width/height and a viewBox (it scales down with the page), class ``chart`` and a
``data-chart`` name, so a page stays a single self-contained file."""

from __future__ import annotations

import math
from html import escape
from typing import Any, Iterable, Sequence

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22"]
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.4g}"
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    out = []
    v = start
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def log_ticks(lo: float, hi: float) -> list[float]:
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = [10.0 ** k for k in range(a, b + 1)]
    ticks = [t for t in decades if lo * 0.999 <= t <= hi * 1.001]
    if len(ticks) < 3:
        ticks = sorted({t * m for t in decades for m in (1, 2, 5) if lo * 0.999 <= t * m <= hi * 1.001})
    return ticks


class _Axis:
    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool = False):
        self.log = log
        if log:
            lo, hi = max(lo, 1e-12), max(hi, lo * 10)
            self.lo, self.hi = math.log10(lo), math.log10(hi)
            self.ticks = log_ticks(lo, hi)
        else:
            if hi <= lo:
                hi = lo + (abs(lo) * 0.1 or 1.0)
            self.ticks = nice_ticks(lo, hi)
            self.lo, self.hi = min([lo, *self.ticks[:1]]), max([hi, *self.ticks[-1:]])
        self.p0, self.p1 = p0, p1

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(max(v, 10 ** self.lo))
        return self.p0 + (v - self.lo) / ((self.hi - self.lo) or 1.0) * (self.p1 - self.p0)


def _finite(vals: Iterable[Any]) -> list[float]:
    out = []
    for v in vals:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def _legend(items: Sequence[tuple[str, str, str | None]], x: float, y: float, width: float) -> tuple[str, float]:
    """Legend entries flowing left to right; returns (svg, height used)."""
    parts, cx, cy = [], x, y
    for name, col, dash in items:
        w = 28 + 6.5 * len(name)
        if cx + w > x + width and cx > x:
            cx, cy = x, cy + 16
        d = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<line x1="{cx:.1f}" y1="{cy - 4:.1f}" x2="{cx + 18:.1f}" y2="{cy - 4:.1f}" stroke="{col}" '
                     f'stroke-width="2.5"{d}/><text x="{cx + 22:.1f}" y="{cy:.1f}" font-size="11">{escape(name)}</text>')
        cx += w
    return "".join(parts), cy - y + 16


def line_chart(series: Sequence[dict], *, name: str, title: str = "", x_label: str = "", y_label: str = "",
               width: int = 620, height: int = 260, x_log: bool = False, y_log: bool = False,
               x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None,
               bands: Sequence[dict] = (), vlines: Sequence[dict] = (), hlines: Sequence[dict] = (),
               y_min_zero: bool = True) -> str:
    """``series``: dicts with ``name``, ``x``, ``y`` and optional ``color``, ``dash``, ``step``
    (draw as steps), ``markers`` (dots only, no line), ``width``.
    ``bands``: ``{"x0", "x1", "color", "label"}`` shaded x ranges; ``vlines``: ``{"x", "color",
    "label", "dash"}``; ``hlines``: ``{"y", "color", "label", "dash"}``."""
    series = [s for s in series if len(_finite(s.get("y", []))) > 0]
    legend_items = [(s["name"], s.get("color") or color(i), s.get("dash")) for i, s in enumerate(series)]
    legend_svg, legend_h = _legend(legend_items, 56, 0, width - 70) if legend_items else ("", 0)
    top = 30 + (legend_h + 4 if legend_items else 0)
    left, right, bottom = 58, 14, 40
    h_total = height + (legend_h if legend_items else 0)
    xs = [x for s in series for x in _finite(s["x"])]
    ys = [y for s in series for y in _finite(s["y"])]
    xs += [v for b in bands for v in _finite([b.get("x0"), b.get("x1")])]
    xs += _finite([v.get("x") for v in vlines])
    ys += _finite([h.get("y") for h in hlines])
    svg_open = (f'<svg class="chart" data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" '
                f'width="{width}" height="{h_total}" viewBox="0 0 {width} {h_total}" role="img" '
                f'style="{FONT};max-width:100%;height:auto"><title>{escape(title or name)}</title>')
    if not xs or not ys:
        return (svg_open + f'<text x="{width / 2}" y="{h_total / 2}" text-anchor="middle" font-size="13" '
                f'fill="#888">{escape(title)}: no data</text></svg>')
    if x_log:
        xs = [x for x in xs if x > 0] or [1.0]
    if y_log:
        ys = [y for y in ys if y > 0] or [1.0]
    xlo, xhi = x_range if x_range else (min(xs), max(xs))
    ylo, yhi = y_range if y_range else (min(ys), max(ys))
    if y_min_zero and not y_log and y_range is None:
        ylo = min(0.0, ylo)
    if not y_log and y_range is None:
        yhi = yhi + (yhi - ylo) * 0.05
    xa = _Axis(xlo, xhi, left, width - right, x_log)
    ya = _Axis(ylo, yhi, h_total - bottom, top, y_log)
    out = [svg_open, f'<rect x="0" y="0" width="{width}" height="{h_total}" fill="#fff"/>']
    if title:
        out.append(f'<text x="{left}" y="14" font-size="13" font-weight="600">{escape(title)}</text>')
    if legend_items:
        out.append(f'<g transform="translate(0,{24 + 10})">{legend_svg}</g>')
    out.append(f'<defs><clipPath id="c-{escape(name)}"><rect x="{xa.p0}" y="{ya.p1}" width="{xa.p1 - xa.p0}" '
               f'height="{ya.p0 - ya.p1}"/></clipPath></defs>')
    out += _bands(bands, xa, ya)
    out += _frame(xa, ya, x_label, y_label, h_total)
    out.append(f'<g clip-path="url(#c-{escape(name)})">')
    out += [_series(s, s.get("color") or color(i), xa, ya, x_log, y_log) for i, s in enumerate(series)]
    out.append("</g>")
    out += _marks(hlines, vlines, xa, ya)
    out.append("</svg>")
    return "".join(out)


def _bands(bands: Sequence[dict], xa: "_Axis", ya: "_Axis") -> list[str]:
    out = []
    for b in bands:
        x0, x1 = xa(max(float(b["x0"]), xa_lo(xa))), xa(min(float(b["x1"]), xa_hi(xa)))
        if x1 > x0:
            out.append(f'<rect class="band" x="{x0:.1f}" y="{ya.p1:.1f}" width="{x1 - x0:.1f}" '
                       f'height="{ya.p0 - ya.p1:.1f}" fill="{b.get("color", "#f5c6cb")}" fill-opacity="0.35">'
                       f'<title>{escape(b.get("label", ""))}</title></rect>')
    return out


def _frame(xa: "_Axis", ya: "_Axis", x_label: str, y_label: str, h_total: int) -> list[str]:
    """Grid, ticks, the plot's border and the axis labels."""
    px0, px1, py0, py1 = xa.p0, xa.p1, ya.p0, ya.p1
    out = []
    for t in ya.ticks:
        y = ya(t)
        if py1 - 0.5 <= y <= py0 + 0.5:
            out.append(f'<line x1="{px0}" y1="{y:.1f}" x2="{px1}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                       f'<text x="{px0 - 5}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{fmt_tick(t)}</text>')
    for t in xa.ticks:
        x = xa(t)
        if px0 - 0.5 <= x <= px1 + 0.5:
            out.append(f'<line x1="{x:.1f}" y1="{py1}" x2="{x:.1f}" y2="{py0}" stroke="#f0f0f0"/>'
                       f'<text x="{x:.1f}" y="{py0 + 14}" font-size="10" text-anchor="middle">{fmt_tick(t)}</text>')
    out.append(f'<rect x="{px0}" y="{py1}" width="{px1 - px0}" height="{py0 - py1}" fill="none" stroke="#999"/>')
    if x_label:
        out.append(f'<text x="{(px0 + px1) / 2:.1f}" y="{h_total - 6}" font-size="11" text-anchor="middle">'
                   f'{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text x="12" y="{(py0 + py1) / 2:.1f}" font-size="11" text-anchor="middle" '
                   f'transform="rotate(-90 12 {(py0 + py1) / 2:.1f})">{escape(y_label)}</text>')
    return out


def _series(s: dict, col: str, xa: "_Axis", ya: "_Axis", x_log: bool, y_log: bool) -> str:
    """One series: dots (``markers``) or a polyline (``step``: drawn as steps)."""
    pts = [(float(x), float(y)) for x, y in zip(s["x"], s["y"])
           if _ok(x) and _ok(y) and (not x_log or float(x) > 0) and (not y_log or float(y) > 0)]
    if not pts:
        return ""
    if s.get("markers"):
        return (f'<g class="series" data-series="{escape(s["name"])}" fill="{col}">' + "".join(
            f'<circle cx="{xa(x):.1f}" cy="{ya(y):.1f}" r="4"><title>{escape(s["name"])}: '
            f'{fmt_tick(x)}, {fmt_tick(y)}</title></circle>' for x, y in pts) + "</g>")
    coords = []
    prev = None
    for x, y in pts:
        if s.get("step") and prev is not None:
            coords.append(f"{xa(x):.1f},{ya(prev):.1f}")
        coords.append(f"{xa(x):.1f},{ya(y):.1f}")
        prev = y
    d = f' stroke-dasharray="{s["dash"]}"' if s.get("dash") else ""
    return (f'<polyline class="series" data-series="{escape(s["name"])}" fill="none" stroke="{col}" '
            f'stroke-width="{s.get("width", 1.6)}"{d} stroke-linejoin="round" points="{" ".join(coords)}"/>')


def _marks(hlines: Sequence[dict], vlines: Sequence[dict], xa: "_Axis", ya: "_Axis") -> list[str]:
    """Horizontal reference lines and vertical event marks, labelled."""
    px0, px1, py0, py1 = xa.p0, xa.p1, ya.p0, ya.p1
    out = []
    for h in hlines:
        y = ya(float(h["y"]))
        if py1 <= y <= py0:
            out.append(f'<line x1="{px0}" y1="{y:.1f}" x2="{px1}" y2="{y:.1f}" stroke="{h.get("color", "#555")}" '
                       f'stroke-dasharray="{h.get("dash", "4 3")}"/>'
                       f'<text x="{px1 - 4}" y="{y - 3:.1f}" font-size="10" text-anchor="end" '
                       f'fill="{h.get("color", "#555")}">{escape(h.get("label", ""))}</text>')
    for k, v in enumerate(vlines):
        x = xa(float(v["x"]))
        if px0 - 0.5 <= x <= px1 + 0.5:
            col = v.get("color", "#555")
            out.append(f'<line class="mark" x1="{x:.1f}" y1="{py1}" x2="{x:.1f}" y2="{py0}" stroke="{col}" '
                       f'stroke-width="1.5" stroke-dasharray="{v.get("dash", "5 3")}"><title>'
                       f'{escape(v.get("label", ""))}</title></line>')
            if v.get("label"):
                ty = py1 + 12 + 12 * (k % 3)
                anchor = "end" if x > (px0 + px1) / 2 else "start"
                dx = -3 if anchor == "end" else 3
                out.append(f'<text x="{x + dx:.1f}" y="{ty:.1f}" font-size="10" text-anchor="{anchor}" '
                           f'fill="{col}">{escape(v["label"])}</text>')
    return out


def xa_lo(a: _Axis) -> float:
    return 10 ** a.lo if a.log else a.lo


def xa_hi(a: _Axis) -> float:
    return 10 ** a.hi if a.log else a.hi


def _ok(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def stacked_hbar(rows: Sequence[tuple[str, Sequence[float]]], segments: Sequence[str], *, name: str,
                 title: str = "", unit: str = "ms", width: int = 680, totals: Sequence[float | None] | None = None,
                 colors: Sequence[str] | None = None) -> str:
    """One horizontal bar per row, stacked from ``segments`` (values < 0 drawn as 0, shown in the
    tooltip as measured). ``totals``: a marker per row (e.g. the end-to-end value)."""
    colors = list(colors or [color(i) for i in range(len(segments))])
    legend_svg, legend_h = _legend([(s, colors[i], None) for i, s in enumerate(segments)], 120, 0, width - 130)
    bar_h, gap, left, right = 22, 12, 120, 60
    top = 24 + legend_h + 8
    height = top + len(rows) * (bar_h + gap) + 26
    vmax = max([sum(max(0.0, float(v)) for v in vals if _ok(v)) for _, vals in rows] +
               [float(t) for t in (totals or []) if t is not None and _ok(t)] + [1e-9])
    xa = _Axis(0.0, vmax, left, width - right)
    out = [f'<svg class="chart" data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" style="{FONT};max-width:100%;height:auto">'
           f'<title>{escape(title or name)}</title><rect width="{width}" height="{height}" fill="#fff"/>']
    if title:
        out.append(f'<text x="8" y="14" font-size="13" font-weight="600">{escape(title)}</text>')
    out.append(f'<g transform="translate(0,{24 + 10})">{legend_svg}</g>')
    y_axis = top + len(rows) * (bar_h + gap)
    for t in xa.ticks:
        x = xa(t)
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{y_axis}" stroke="#eee"/>'
                   f'<text x="{x:.1f}" y="{y_axis + 14}" font-size="10" text-anchor="middle">{fmt_tick(t)}</text>')
    out.append(f'<text x="{width - right + 4}" y="{y_axis + 14}" font-size="10">{escape(unit)}</text>')
    for r, (label, vals) in enumerate(rows):
        y = top + r * (bar_h + gap)
        out.append(f'<text x="{left - 6}" y="{y + bar_h / 2 + 4:.1f}" font-size="11" text-anchor="end">'
                   f'{escape(label)}</text>')
        acc = 0.0
        for i, v in enumerate(vals):
            if not _ok(v):
                continue
            w = max(0.0, float(v))
            x0, x1 = xa(acc), xa(acc + w)
            out.append(f'<rect class="seg" data-seg="{escape(segments[i])}" x="{x0:.2f}" y="{y}" '
                       f'width="{max(0.0, x1 - x0):.2f}" height="{bar_h}" fill="{colors[i]}"><title>'
                       f'{escape(label)} · {escape(segments[i])}: {float(v):.3f} {escape(unit)}</title></rect>')
            acc += w
        out.append(f'<text x="{xa(acc) + 4:.1f}" y="{y + bar_h / 2 + 4:.1f}" font-size="10">{acc:.3f}</text>')
        if totals and r < len(totals) and totals[r] is not None and _ok(totals[r]):
            x = xa(float(totals[r]))
            out.append(f'<line x1="{x:.1f}" y1="{y - 3}" x2="{x:.1f}" y2="{y + bar_h + 3}" stroke="#000" '
                       f'stroke-width="2"><title>end to end: {float(totals[r]):.3f} {escape(unit)}</title></line>')
    out.append("</svg>")
    return "".join(out)


def grouped_bars(categories: Sequence[str], groups: Sequence[tuple[str, Sequence[float | None]]], *, name: str,
                 title: str = "", y_label: str = "", width: int = 620, height: int = 240, y_log: bool = False,
                 colors: Sequence[str] | None = None, baseline: float | None = None) -> str:
    """Vertical bars: one cluster per category, one bar per group (e.g. run A / run B). Bars start
    at ``baseline`` when given (e.g. 1 for ratios on a log axis: above 1 up, below 1 down)."""
    colors = list(colors or [color(i) for i in range(len(groups))])
    legend_svg, legend_h = _legend([(g, colors[i], None) for i, (g, _) in enumerate(groups)], 58, 0, width - 70)
    h_total = height + legend_h
    left, right, bottom, top = 58, 14, 36, 24 + legend_h + 6
    vals = [float(v) for _, vs in groups for v in vs if _ok(v) and (not y_log or float(v) > 0)]
    out = [f'<svg class="chart" data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{h_total}" viewBox="0 0 {width} {h_total}" role="img" style="{FONT};max-width:100%;height:auto">'
           f'<title>{escape(title or name)}</title><rect width="{width}" height="{h_total}" fill="#fff"/>']
    if title:
        out.append(f'<text x="{left}" y="14" font-size="13" font-weight="600">{escape(title)}</text>')
    out.append(f'<g transform="translate(0,{24 + 10})">{legend_svg}</g>')
    if not vals:
        out.append(f'<text x="{width / 2}" y="{h_total / 2}" text-anchor="middle" fill="#888">no data</text></svg>')
        return "".join(out)
    lo = min(vals) / 1.5 if y_log else min(0.0, min(vals))
    hi = max(vals) * (1.5 if y_log else 1.08)
    if baseline is not None:
        lo = min(lo, baseline / (1.5 if y_log else 1.0))
        hi = max(hi, baseline * (1.5 if y_log else 1.0))
    ya = _Axis(lo, hi, h_total - bottom, top, y_log)
    for t in ya.ticks:
        y = ya(t)
        if top - 0.5 <= y <= h_total - bottom + 0.5:
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#eee"/>'
                       f'<text x="{left - 5}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{fmt_tick(t)}</text>')
    if y_label:
        mid = (top + h_total - bottom) / 2
        out.append(f'<text x="12" y="{mid:.1f}" font-size="11" text-anchor="middle" '
                   f'transform="rotate(-90 12 {mid:.1f})">{escape(y_label)}</text>')
    n_c, n_g = max(1, len(categories)), max(1, len(groups))
    cw = (width - left - right) / n_c
    bw = cw * 0.8 / n_g
    base = ya(baseline if baseline is not None else (lo if y_log else 0.0))
    for c, cat in enumerate(categories):
        x0 = left + c * cw + cw * 0.1
        for g, (gname, vs) in enumerate(groups):
            v = vs[c] if c < len(vs) else None
            if not _ok(v) or (y_log and float(v) <= 0):
                continue
            y = ya(float(v))
            top_y, h = (y, base - y) if y <= base else (base, y - base)
            out.append(f'<rect class="bar" data-group="{escape(gname)}" x="{x0 + g * bw:.1f}" y="{top_y:.1f}" '
                       f'width="{bw * 0.92:.1f}" height="{max(h, 0.5):.1f}" fill="{colors[g]}"><title>'
                       f'{escape(gname)} · {escape(cat)}: {float(v):.4g}</title></rect>')
        out.append(f'<text x="{left + c * cw + cw / 2:.1f}" y="{h_total - bottom + 14}" font-size="10" '
                   f'text-anchor="middle">{escape(cat[:18])}</text>')
    out.append(f'<line x1="{left}" y1="{base:.1f}" x2="{width - right}" y2="{base:.1f}" stroke="#999"/></svg>')
    return "".join(out)
