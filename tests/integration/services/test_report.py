"""The run report, `crayfish compare` and the resource sampler, on real runs through the real broker.

The HTML is rendered by a real headless Chromium driven over the DevTools protocol (the
``--remote-debugging-pipe`` transport: JSON messages on fds 3/4, no extra package): the checks are on
what the browser laid out — every SVG chart has a non-zero rendered size, its series drew, the burst
marks are there, and each number cell shows the summary.json value. Without Chromium those tests
fail saying what to install (`make test` installs Debian's ``chromium`` when run as root); that the
pages carry no script and load nothing from outside is checked on the HTML text by a test of its own,
which needs no browser.
"""

from __future__ import annotations

import base64
import fcntl
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment

pytestmark = pytest.mark.kafka

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_HINT = ("headless Chromium not found (chromium or chromium-browser on PATH): install it "
                 "(Debian: apt-get install chromium; `make test` does this when run as root)")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--remote-debugging-pipe"]


def _exp(kafka_bootstrap, sizes) -> Experiment:
    # Two bursts: the first ends with base load after it (recovers), the second at the end of the
    # data (no window left to recover in): both kinds of mark.
    return Experiment.model_validate({
        "name": "report", "model": "ffnn", "engine": "kafka", "kafka": {"bootstrap": kafka_bootstrap},
        "workload": {"type": "bursty", "base_rate": 100, "burst_rate": 500, "burst_s": 1, "period_s": 3,
                     "duration_s": 6},
        "warmup": {"fraction": 0.1},
        "bursts": {"window_s": 0.5, "hold_s": 1.0, "baseline_s": 1.5},
        "validity": {"min_duration_s": 1, "min_count": 20},
        "sweep": {"batch_size": sizes}, "trace_sample": 0.2})


@pytest.fixture(scope="module")
def runs(kafka_bootstrap, models_dir, tmp_path_factory):
    """Run A: two points (batch size 1 and 4); run B: batch size 1 only (one match, one only in A)."""
    base = tmp_path_factory.mktemp("report")
    a, b = base / "run-a", base / "run-b"
    run_experiment(_exp(kafka_bootstrap, [1, 4]), a, models_dir=models_dir)
    run_experiment(_exp(kafka_bootstrap, [1]), b, models_dir=models_dir)
    return a, b


# ---- a minimal DevTools-protocol client over --remote-debugging-pipe ---------------------------

class Browser:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="crayfish-chromium-")
        to_r, to_w = os.pipe()      # we write commands -> chromium reads fd 3
        from_r, from_w = os.pipe()  # chromium writes fd 4 -> we read
        hi_r, hi_w = (fcntl.fcntl(to_r, fcntl.F_DUPFD, 20), fcntl.fcntl(from_w, fcntl.F_DUPFD, 20))
        os.close(to_r)
        os.close(from_w)
        flags = " ".join(CHROMIUM_FLAGS)
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "{CHROMIUM}" {flags} --user-data-dir="{self.profile}" about:blank '
                           f'3<&{hi_r} 4>&{hi_w} {hi_r}<&- {hi_w}>&-'],
            pass_fds=(hi_r, hi_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(hi_r)
        os.close(hi_w)
        self.w = os.fdopen(to_w, "wb", buffering=0)
        self.r = os.fdopen(from_r, "rb", buffering=0)
        self.buf = b""
        self.next_id = 0

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout_s: float = 60.0) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            chunk = self.r.read(1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe during {method}")
            self.buf += chunk
        raise TimeoutError(method)

    def render(self, path: Path, script: str, screenshot: Path | None = None, width: int = 1400) -> dict:
        """Open ``path``, wait for load, evaluate ``script`` (returns a JSON string) -> its value."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": 1000, "deviceScaleFactor": 1,
                                                         "mobile": False}, session)
        self.call("Page.enable", {}, session)
        self.call("Page.navigate", {"url": path.resolve().as_uri()}, session)
        wait = ("new Promise(r => { const f = () => document.readyState === 'complete' ? r(1) : setTimeout(f, 20);"
                " f(); })")
        self.call("Runtime.evaluate", {"expression": wait, "awaitPromise": True}, session)
        value = self.call("Runtime.evaluate", {"expression": script, "returnByValue": True}, session)
        if "exceptionDetails" in value:
            raise RuntimeError(value["exceptionDetails"])
        if screenshot is not None:
            size = self.call("Page.getLayoutMetrics", {}, session)["cssContentSize"]
            shot = self.call("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": min(size["height"], 16000), "scale": 1}}, session)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        self.call("Target.closeTarget", {"targetId": target})
        return json.loads(value["result"]["value"])

    def close(self):
        try:
            self.call("Browser.close", timeout_s=10)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=5)
        self.w.close()
        self.r.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail(CHROMIUM_HINT, pytrace=False)
    b = Browser()
    try:
        yield b
    finally:
        b.close()


MEASURE = """JSON.stringify({
  charts: [...document.querySelectorAll('svg.chart')].map(s => {
    const r = s.getBoundingClientRect();
    const drawn = [...s.querySelectorAll('.series, .seg, .bar')].map(e => e.getBBox())
                    .filter(b => b.width > 0 || b.height > 0).length;
    return {name: s.dataset.chart, w: r.width, h: r.height, drawn: drawn,
            bands: s.querySelectorAll('rect.band').length,
            marks: [...s.querySelectorAll('line.mark')].map(l => l.textContent.trim())};
  }),
  cells: [...document.querySelectorAll('[data-key]')].map(e => ({
    section: (e.closest('section') || {}).id || '', key: e.dataset.key,
    text: e.textContent.trim(), shown: e.innerText.trim(), w: e.getBoundingClientRect().width})),
  ratios: [...document.querySelectorAll('[data-ratio]')].map(e => ({metric: e.dataset.ratio,
    text: e.innerText.trim()})),
  scripts: document.scripts.length,
  external: [...document.querySelectorAll('[src], link[href]')].map(e => e.src || e.href),
  title: document.title,
})"""


def _value(point: dict, key: str):
    cur = point
    for part in key.split("."):
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]
    return cur


def _shown(text: str) -> float | None:
    t = text.replace(",", "")
    return None if t in ("–", "") else float(t)


class _Assets(HTMLParser):
    """What a page would run or fetch: script elements, and every src/href/srcset/data/poster/
    action attribute, @import and url(...) of its inline CSS."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.scripts, self.refs, self.tags = 0, [], 0
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags += 1
        self.scripts += tag == "script"
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action", "xlink:href", "formaction"):
                self.refs.append((tag, name, value or ""))
            if name == "style":
                self._css(value or "")

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self._css(data)

    def _css(self, css):
        self.refs += [("css", "url", u.strip("'\" ")) for u in re.findall(r"url\(([^)]*)\)", css)]
        self.refs += [("css", "@import", "@import")] * len(re.findall(r"@import", css, re.I))


def _assets(path: Path) -> _Assets:
    parser = _Assets()
    parser.feed(path.read_text())
    parser.close()
    return parser


# ---- tests ---------------------------------------------------------------------------------------

def test_pages_carry_no_script_and_no_external_asset(runs, tmp_path):
    """report.html and the compare page are self-contained and inert: no <script>, and nothing
    fetched from anywhere (only in-page #links). Checked on the HTML text, no browser needed."""
    a, b = runs
    cmp_html = tmp_path / "cmp.html"
    r = subprocess.run([sys.executable, "-m", "services.runner.cli", "compare", str(a), str(b), "--out",
                        str(cmp_html)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for page in (a / "report.html", b / "report.html", cmp_html):
        assert page.exists(), page
        text = page.read_text()
        assert "<script" not in text.lower() and " src=" not in text, page
        found = _assets(page)
        assert found.tags > 100, (page, found.tags)  # a parsed page, not an empty one
        assert found.scripts == 0, page
        outside = [ref for ref in found.refs if not ref[2].startswith("#")]   # in-page links only
        assert outside == [], (page, outside)
    assert {h[0] for h in re.findall(r'href="([^"]*)"', (a / "report.html").read_text())} == {"#"}  # it has links


def test_report_renders_charts_and_the_summary_numbers(runs, browser, tmp_path):
    a, _ = runs
    html = a / "report.html"
    assert html.exists(), "crayfish run writes report.html at the end"
    summary = json.loads((a / "summary.json").read_text())
    points = summary["points"]
    assert len(points) == 2

    shot = tmp_path / "report.png"
    got = browser.render(html, MEASURE, screenshot=shot)
    assert got["scripts"] == 0 and got["external"] == []
    assert shot.stat().st_size > 50_000  # a real picture, not a blank page

    charts = {c["name"]: c for c in got["charts"]}
    for c in got["charts"]:
        assert c["w"] > 200 and c["h"] > 100, c
    assert charts["overview-latency"]["drawn"] >= 4
    for i, p in enumerate(points):
        for name in (f"cdf-{i}", f"latency-timeline-{i}-0", f"throughput-timeline-{i}-0", f"lag-timeline-{i}-0",
                     f"cpu-{i}-0", f"rss-{i}-0"):
            assert name in charts, (name, sorted(charts))
            assert charts[name]["drawn"] >= 1, charts[name]
        if (p.get("hops_traced") or {}).get("hops_ms"):  # traced batches: six stacked hops, p50 and mean rows
            assert charts[f"hops-{i}"]["drawn"] >= 6, charts.get(f"hops-{i}")
        else:
            assert f"hops-{i}" not in charts
        assert charts[f"cdf-{i}"]["drawn"] == 2  # latency and latency from schedule
        # Burst windows shaded, and one recovery mark per burst on the timelines.
        bursts = p["bursts"]
        assert len(bursts) == 2
        for name in (f"latency-timeline-{i}-0", f"throughput-timeline-{i}-0", f"lag-timeline-{i}-0"):
            assert charts[name]["bands"] == len(bursts)
            marks = [m for m in charts[name]["marks"] if "recover" in m]
            want = [f"recovered +{b['recovery_s']:.1f} s" if b["recovery_s"] is not None else "not recovered"
                    for b in bursts]
            assert marks == want, (marks, bursts)
        assert bursts[-1]["recovery_s"] is None  # the last burst ends with the data

    # Every number cell of a point's section shows that point's summary value (to its precision).
    checked = 0
    for cell in got["cells"]:
        if not cell["section"].startswith("point-"):
            continue
        point = points[int(cell["section"].split("-")[1])]
        want = _value(point, cell["key"])
        if cell["text"] == "<1†":   # under the broker stamps' 1 ms (services.report.resolution)
            assert abs(float(want)) < 1.0 and cell["w"] > 0, (cell, want)
            checked += 1
            continue
        shown = _shown(cell["text"])
        if not cell["key"].startswith("hops_ms."):  # only the stamp medians sit in a closed <details>
            assert cell["shown"] == cell["text"] and cell["w"] > 0, cell
        if want is None or (isinstance(want, float) and math.isnan(want)):
            assert shown is None, cell
            continue
        nd = len(cell["text"].split(".")[1]) if "." in cell["text"] else 0
        assert shown == pytest.approx(float(want), abs=0.51 * 10 ** -nd), (cell, want)
        checked += 1
    keys = {c["key"] for c in got["cells"] if c["section"] == "point-0"}
    for k in ("p50", "p90", "p95", "p99", "p999", "max"):
        assert f"latency_ms.{k}" in keys and f"latency_from_schedule_ms.{k}" in keys
    assert {"accounting.sent", "accounting.scored", "accounting.missing", "throughput_bps",
            "resources.kafka-worker.cpu_mean_pct", "bursts.0.recovery_s"} <= keys
    if (points[0].get("hops_traced") or {}).get("hops_ms"):
        assert "hops_traced.hops_ms.score.p50" in keys
    assert checked > 100
    # The overview rows show the same numbers as the sections.
    over = [c for c in got["cells"] if c["section"] == "overview"]
    assert len(over) == 2 * 8
    assert [c["text"] for c in over if c["key"] == "latency_ms.p99"] == \
        [f"{p['latency_ms']['p99']:,.3f}" for p in points]


def test_resources_sampled_per_service(runs):
    a, _ = runs
    summary = json.loads((a / "summary.json").read_text())
    for p in summary["points"]:
        rep = Path(p["dir"])
        t = pq.read_table(rep / "resources.parquet").to_pydict()
        assert set(t) >= {"t_s", "service", "cpu_percent", "rss_mb"}
        services = set(t["service"])
        assert {"kafka-worker", "collector", "generator"} <= services, services
        # The generator's send stamps (Unix time, ns): the samples share that clock and were taken
        # while the load ran (ordering of stamps, no duration threshold).
        created = pq.read_table(rep / "sent.parquet", columns=["created_ns"]).column(0).to_pylist()
        first_send, last_send = min(created) / 1e9, max(created) / 1e9
        for name in ("kafka-worker", "collector"):
            rows = [i for i, s in enumerate(t["service"]) if s == name]
            assert len(rows) >= 8  # 0.5 s sampling over a >= 6 s point
            ts = [t["t_s"][i] for i in rows]
            assert all(b > a_ for a_, b in zip(ts, ts[1:])), ts   # one row per sample, in order
            assert ts[0] < last_send and ts[-1] > first_send, (ts, first_send, last_send)
            assert all(0 <= t["cpu_percent"][i] < 400 for i in rows)
            assert all(20 < t["rss_mb"][i] < 4000 for i in rows)  # a Python process with numpy/onnxruntime
        worker_cpu = [t["cpu_percent"][i] for i, s in enumerate(t["service"]) if s == "kafka-worker"]
        assert max(worker_cpu) > 0
        res = p["resources"]["kafka-worker"]
        assert res["cpu_mean_pct"] > 0 and res["cpu_max_pct"] >= res["cpu_mean_pct"] and res["rss_max_mb"] > 20
        # The sampled CPU agrees with the worker's own CPU time over the point (the sampler's window
        # is a little wider: from the collector being ready until the services stop).
        rows = [i for i, s in enumerate(t["service"]) if s == "kafka-worker"]
        cpu_s = sum(t["cpu_percent"][j] / 100 * (t["t_s"][j] - t["t_s"][i]) for i, j in zip(rows, rows[1:]))
        assert cpu_s == pytest.approx(p["resources"]["worker_cpu_s"], rel=0.5, abs=0.3)


def test_report_command_rewrites_the_report(runs, tmp_path):
    a, _ = runs
    out = tmp_path / "again.html"
    r = subprocess.run([sys.executable, "-m", "services.runner.cli", "report", str(a), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.exists() and str(out) in r.stdout.replace("\n", "")
    assert out.read_text().count('class="chart"') == (a / "report.html").read_text().count('class="chart"')
    r = subprocess.run([sys.executable, "-m", "services.runner.cli", "report", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no summary.json" in r.stderr


def test_compare_two_runs(runs):
    a, b = runs
    r = subprocess.run([sys.executable, "-m", "services.runner.cli", "compare", str(a), str(b)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = b / f"compare-{a.name}.html"
    assert out.exists()
    assert "1 matching point(s)" in r.stdout
    assert "only in A: #1 batch_size4" in r.stdout
    sa, sb = (json.loads((d / "summary.json").read_text())["points"][0] for d in (a, b))
    lines = {ln.split("│")[1].strip(): [c.strip() for c in ln.split("│")[2:5]]
             for ln in r.stdout.splitlines() if ln.count("│") >= 5}
    thr = lines["throughput (batches/s)"]
    assert thr[0] == f"{sa['throughput_bps']:,.1f}" and thr[1] == f"{sb['throughput_bps']:,.1f}"
    assert thr[2] == f"{sb['throughput_bps'] / sa['throughput_bps']:.3f}×"
    p99 = lines["latency p99 (ms)"]
    assert p99[2] == f"{sb['latency_ms']['p99'] / sa['latency_ms']['p99']:.3f}×"
    assert any(k.startswith("hop score p50") for k in lines) and "valid" in lines


def test_compare_html_renders(runs, browser, tmp_path):
    a, b = runs
    out = tmp_path / "cmp.html"
    r = subprocess.run([sys.executable, "-m", "services.runner.cli", "compare", str(a), str(b), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    sa, sb = (json.loads((d / "summary.json").read_text())["points"][0] for d in (a, b))
    got = browser.render(out, MEASURE)
    charts = {c["name"]: c for c in got["charts"]}
    assert got["scripts"] == 0 and got["external"] == []
    for name in ("compare-ratios", "cmp-cdf-0", "cmp-pct-0", "cmp-hops-0"):
        assert charts[name]["w"] > 200 and charts[name]["h"] > 100 and charts[name]["drawn"] >= 2, charts.get(name)
    assert charts["cmp-cdf-0"]["drawn"] == 4  # A and B, latency and from schedule
    ratio = {x["metric"]: x["text"] for x in got["ratios"]}
    assert ratio["throughput (batches/s)"] == f"{sb['throughput_bps'] / sa['throughput_bps']:.3f}×"
