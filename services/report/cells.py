"""The report's table cells: a number (``num``), a cell tied to its summary key (``td``, with the
sd across repetitions beside it and the broker-resolution mark of :mod:`.resolution`), a badge."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from services.report import resolution
from services.report.data import get


def num(v: Any, nd: int = 3) -> str:
    if v is None or isinstance(v, bool):
        return "–" if v is None else ("yes" if v else "no")
    try:
        f = float(v)
    except (TypeError, ValueError):
        return escape(str(v))
    if not math.isfinite(f):
        return "–"
    if nd == 0:
        return f"{f:,.0f}"
    return f"{f:,.{nd}f}"


def td(point: dict, key: str, nd: int = 3, cls: str = "", with_sd: bool = True) -> str:
    v = get(point, key)
    sd = get(point.get("sd") or {}, key) if with_sd else None
    sd_html = f'<span class="sd">± {num(sd, nd)}</span>' if isinstance(sd, (int, float)) and sd == sd else ""
    c = f' class="{cls}"' if cls else ""
    if resolution.marked(key, v):   # under the broker stamps' 1 ms: "<1†" (services.report.resolution)
        return (f'<td{c} data-key="{escape(key)}" data-below-resolution="1" title="{escape(str(v))}">'
                f'{escape(resolution.below_text())}{sd_html}</td>')
    return f'<td{c} data-key="{escape(key)}">{num(v, nd)}{sd_html}</td>'


def badge(ok: bool | None, yes: str, no: str) -> str:
    if ok is None:
        return '<span class="badge na">n/a</span>'
    return f'<span class="badge {"ok" if ok else "bad"}">{escape(yes if ok else no)}</span>'
