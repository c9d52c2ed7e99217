"""The native stack (services/stack, `make up` / `make down`): real processes, no mocks.

`up` starts Kafka, Jaeger (built from the Go module proxy if missing: the fixture builds it, which
takes long once per machine), our Scoring server, the baseline worker and the collector; a real
generator sends sampled batches through the stack's input topic; the spans of the generator and of
the worker reach Jaeger over OTLP and are queried back from its HTTP API with their parent/child
links across Kafka; `down` leaves no process (recorded pid, descendant, process group or session)
and no port behind. Every port is picked free (ports: 0), the stack lives in a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from crayfish.host.ports import port_free
from observability.jaeger.build import VERSION, BuildError, ensure_jaeger, version_file
from services.stack.declarations import STACK
from services.stack.processes import members
from services.stack.settings import DEFAULT_CONFIG, PortSettings
from serving.models import MODELS

REPO = Path(__file__).resolve().parents[3]
PY = sys.executable
PORT_KEYS = list(PortSettings.model_fields)
N_BATCHES = 5


def _stack(cfg: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "services.stack", *args, "--config", str(cfg)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _get_json(url: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as r:
        return json.loads(r.read())


def _alive(pid: int, create_time: float) -> bool:
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - create_time) <= 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def jaeger_binary():
    """The Jaeger binary; built here when missing (a clean clone: `make jaeger` does the same)."""
    try:
        return ensure_jaeger(log=lambda m: print(m, flush=True))
    except BuildError as exc:
        pytest.fail(f"cannot build Jaeger: {exc}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, jaeger_binary):
    """A stack in a temporary folder with free ports: (config path, state after up)."""
    d = tmp_path_factory.mktemp("stack")
    cfg = d / "stack.yaml"
    cfg.write_text(yaml.safe_dump({"dir": str(d / "run"), "ports": {k: 0 for k in PORT_KEYS},
                                   "ready_timeout_s": 120, "stop_timeout_s": 20}))
    t = time.monotonic()
    res = _stack(cfg, "up")
    if res.returncode != 0:
        _stack(cfg, "down")
        pytest.fail(f"stack up failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}")
    print(f"stack up in {time.monotonic() - t:.1f} s\n{res.stdout}")
    state = json.loads((d / "run" / "stack.json").read_text())
    try:
        yield cfg, state
    finally:
        _stack(cfg, "down")   # idempotent: a no-op after test_down_leaves_nothing


@pytest.mark.timeout(3600)   # a clean machine builds Jaeger here (the whole OTel collector: long on 2 cores)
def test_jaeger_binary(jaeger_binary):
    """Built from the Go module proxy (or cached in .cache/jaeger/bin): `make jaeger` does the same."""
    assert jaeger_binary.exists() and os.access(jaeger_binary, os.X_OK)
    assert version_file().read_text().strip() == VERSION


def test_every_port_belongs_to_one_declared_service():
    """Each ports.* setting is listened on by exactly one declared service and carries its name
    (kafka, kafka_controller, jaeger_*...); compose/native/stack.yaml sets every one of them."""
    owners: dict[str, str] = {}
    for svc in STACK:
        for key in svc.ports:
            assert key not in owners, f"ports.{key}: declared by {owners[key]} and {svc.name}"
            owners[key] = svc.name
            stem = svc.name.replace("-", "_")
            assert key == stem or key.startswith(stem + "_"), f"{svc.name} listens on ports.{key}"
    assert set(owners) == set(PORT_KEYS), set(owners) ^ set(PORT_KEYS)
    assert set(yaml.safe_load(DEFAULT_CONFIG.read_text())["ports"]) == set(PORT_KEYS)
    names = [svc.name for svc in STACK]
    for i, svc in enumerate(STACK):   # the start order respects every dependency
        assert set(svc.depends_on) <= set(names[:i]), (svc.name, svc.depends_on)


def test_up_is_healthy_and_loopback_only(stack):
    cfg, state = stack
    assert state["status"] == "up"
    assert [r["name"] for r in state["services"]] == [svc.name for svc in STACK] == \
        ["jaeger", "kafka", "scoring", "kafka-worker", "collector"]
    for rec in state["services"]:
        assert rec["pgid"] == rec["pid"] and rec["sid"] == rec["pid"], rec   # own process group and session
        assert _alive(rec["pid"], rec["create_time"]), rec["name"]
        # one name: process name = OTEL_SERVICE_NAME = log file
        assert psutil.Process(rec["pid"]).environ()["OTEL_SERVICE_NAME"] == rec["name"], rec["name"]
        assert Path(rec["logs"][0]).parent.name == "logs" and \
            Path(rec["logs"][0]).stem == rec["name"] and Path(rec["logs"][0]).exists(), rec["logs"]
    ps = _stack(cfg, "ps", "--check", timeout=60)
    assert ps.returncode == 0, ps.stdout + ps.stderr
    assert ps.stdout.count("healthy") == 5, ps.stdout
    # No listener of any stack process binds another interface than 127.0.0.1.
    listening = []
    for rec in state["services"]:
        for p in members(rec):
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:   # the JVM and gRPC bind IPv4-mapped ::ffff:127.0.0.1
                    listening.append((rec["name"], c.laddr.ip.removeprefix("::ffff:"), c.laddr.port))
    assert listening and all(ip == "127.0.0.1" for _, ip, _ in listening), listening
    ports = {port for _, _, port in listening}
    assert set(state["ports"].values()) <= ports, (state["ports"], listening)
    logs = _stack(cfg, "logs", "jaeger", "-n", "5", timeout=30)
    assert logs.returncode == 0 and "==> jaeger" in logs.stdout, logs.stdout + logs.stderr


def test_spans_reach_jaeger_over_otlp_and_link_across_kafka(stack, tmp_path):
    """A generator sends sampled batches into the stack; Jaeger answers with traces in which the
    worker's consumer span is a child of the generator's producer span (context via Kafka headers)."""
    _, state = stack
    ep, topics = state["endpoints"], state["topics"]
    spec = MODELS["ffnn"]
    run_id = f"stacktest-{uuid.uuid4().hex[:8]}"
    gs = {"bootstrap": ep["kafka_bootstrap"], "topic": topics["input"], "run_id": run_id, "model": "ffnn",
          "item_shape": list(spec.input_shape), "dtype": spec.input_dtype, "batch_size": 1,
          "workload": {"type": "constant", "rate": 20, "count": N_BATCHES}, "processes": 1}
    (tmp_path / "generator.json").write_text(json.dumps(gs))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "CRAYFISH_SPANS_DIR"}
    env.update({"OTEL_SERVICE_NAME": "generator", "OTEL_EXPORTER_OTLP_ENDPOINT": ep["otlp_grpc"],
                "OTEL_TRACES_SAMPLER": "always_on", "PYTHONPATH": str(REPO)})
    gen = subprocess.run([PY, "-m", "services.generator", "--config", f"@{tmp_path / 'generator.json'}",
                          "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
    assert gen.returncode == 0, gen.stdout + gen.stderr

    wanted = {f"{run_id}-{i}" for i in range(N_BATCHES)}
    query = f"{ep['jaeger_query']}/api/traces?service=generator&lookback=1h&limit=200"
    deadline = time.monotonic() + 60
    linked: dict[str, dict] = {}
    services_seen: set[str] = set()
    while time.monotonic() < deadline:
        linked.clear()
        for tr in _get_json(query).get("data") or []:
            procs = {k: v["serviceName"] for k, v in tr["processes"].items()}
            spans = {s["spanID"]: s for s in tr["spans"]}
            for s in tr["spans"]:
                svc = procs[s["processID"]]
                tags = {t["key"]: t["value"] for t in s.get("tags", [])}
                if svc != "kafka-worker" or not s["operationName"].startswith("process "):
                    continue
                for ref in s.get("references", []):
                    parent = spans.get(ref["spanID"])
                    if (ref["refType"] == "CHILD_OF" and parent is not None
                            and procs[parent["processID"]] == "generator"
                            and parent["operationName"] == f"send {topics['input']}"
                            and tags.get("crayfish.batch_id") in wanted):
                        linked[tags["crayfish.batch_id"]] = {"trace": tr["traceID"],
                                                             "services": sorted(set(procs.values()))}
            if any(procs[s["processID"]] == "generator" for s in tr["spans"]):
                services_seen |= set(procs.values())
        if set(linked) == wanted:
            break
        time.sleep(0.5)
    assert set(linked) == wanted, (f"worker spans linked to generator spans for {sorted(linked)} of "
                                   f"{sorted(wanted)}; services in the generator's traces: {services_seen}")
    services = _get_json(f"{ep['jaeger_query']}/api/services")["data"]
    assert {"generator", "kafka-worker"} <= set(services), services
    print(f"traces of {N_BATCHES} batches in Jaeger; services in them: {sorted(services_seen)}")


def test_crayfish_run_targets_the_stack(stack, tmp_path):
    """`crayfish run --stack`: the run's topics live on the stack's Kafka and its services' spans
    reach the stack's Jaeger."""
    cfg, state = stack
    ep = state["endpoints"]
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "stack-smoke", "model": "ffnn", "engine": "kafka",
        "serving": {"kind": "embedded", "backend": "onnxruntime", "threads": 1}, "batch_size": 1,
        "parallelism": 1, "workload": {"type": "constant", "rate": 20, "duration_s": 2}, "repetitions": 1,
        "kafka": {"partitions": 1}, "trace_sample": 1.0, "check_predictions": 0}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    crayfish = [PY, "-m", "services.runner.cli", "run", str(exp), "--out", str(tmp_path / "run")]
    bad = subprocess.run(crayfish + ["--stack", str(tmp_path / "nothing-here")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no running stack" in bad.stderr, bad.stdout + bad.stderr
    res = subprocess.run(crayfish + ["--stack", state["dir"]], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    workers = list((tmp_path / "run").rglob("worker.json"))
    assert workers and all(json.loads(w.read_text())["bootstrap"] == ep["kafka_bootstrap"] for w in workers)
    run_topics = {json.loads(w.read_text())["input_topic"] for w in workers}
    deadline = time.monotonic() + 30
    seen = set()
    while time.monotonic() < deadline and not run_topics <= seen:
        data = _get_json(f"{ep['jaeger_query']}/api/traces?service=kafka-worker&lookback=1h&limit=500")["data"]
        seen = {s["operationName"].removeprefix("process ") for tr in data or [] for s in tr["spans"]
                if s["operationName"].startswith("process ")}
        time.sleep(0.5)
    assert run_topics <= seen, (run_topics, seen)


def test_down_leaves_nothing(stack):
    cfg, state = stack
    recorded = [(r["pid"], r["create_time"]) for r in state["services"]]
    recorded += [(c["pid"], c["create_time"]) for r in state["services"] for c in r["children"]]
    # what runs right now (worker instances, JVM/Go threads are not processes), as down will see it
    live_now = {p.pid: p.create_time() for r in state["services"] for p in members(r)}
    assert live_now, "nothing of the stack is running before down"

    res = _stack(cfg, "down", timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no process left" in res.stdout, res.stdout
    left = [pid for pid, ct in recorded + list(live_now.items()) if _alive(pid, ct)]
    assert not left, f"still alive after down: {left}"
    sids = {r["sid"] for r in state["services"]} | {r["pgid"] for r in state["services"]}
    strays = []
    for p in psutil.process_iter():
        try:
            if (os.getsid(p.pid) in sids or os.getpgid(p.pid) in sids) and p.status() != psutil.STATUS_ZOMBIE:
                strays.append((p.pid, p.cmdline()[:3]))
        except (OSError, psutil.Error):
            pass
    assert not strays, f"processes of the stack's sessions/groups after down: {strays}"
    busy = {k: v for k, v in state["ports"].items() if not port_free(v)}
    assert not busy, f"ports still bound after down: {busy}"
    assert not Path(state["state_file"]).exists()
    assert not Path(state["kafka_data_dir"]).exists()
    again = _stack(cfg, "down", timeout=60)
    assert again.returncode == 0 and "no stack running" in again.stdout, again.stdout + again.stderr
    ps = _stack(cfg, "ps", "--check", timeout=60)
    assert ps.returncode == 3, ps.stdout
