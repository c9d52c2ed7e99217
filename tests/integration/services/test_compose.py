"""The docker compose stacks (compose/): parsed with PyYAML and checked against the project's rules.

No Docker engine runs on our machines, so nothing here starts a container. What is checked:
every service has a healthcheck; published ports bind 127.0.0.1; depends_on waits for
service_healthy; our services' OTEL_SERVICE_NAME equals the compose service name and a folder of
the repo; only standard OTEL_* variables; the observability layer points our services at Jaeger;
no literal passwords; every file a service mounts from compose/ exists; the JSON configs validate
against the services' own settings models; the scoring healthcheck one-liner really answers
against a real Scoring server; the worker healthcheck and topic helper compile; the native stack
(`make up`, services/stack) runs the same services under the same names with the same depends_on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from services.collector.collector import CollectorSettings
from services.stack.declarations import STACK
from serving.scoring.settings import ScoringSettings
from sps_workers.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "compose"
LAYERS = ["core.yaml", "serving.yaml", "observability.yaml"]

# The native stack's services (services/stack/declarations.py): the one list of the stack's names
# and of the folders holding their code; the compose files must use the same names.
NATIVE = {svc.name: svc for svc in STACK}
# The compose layer the native stack takes Jaeger from; the rest of that layer (Prometheus,
# Grafana) has no native counterpart.
NATIVE_FROM_OBSERVABILITY = {"jaeger"}
# External servers from their real images -> the folder of their client/launcher.
EXTERNAL_SERVERS = {"tfserving": "serving/tfserving", "triton": "serving/triton"}

# The OpenTelemetry SDK's standard environment variables that the stacks may set.
STANDARD_OTEL = {
    "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED", "OTEL_PROPAGATORS",
    "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER",
    "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_INSECURE",
    "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_QUEUE_SIZE",
}
SECRETISH = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|CREDENTIAL", re.I)
# A value taken from the caller's environment with no default: ${VAR} or ${VAR:?message}.
FROM_ENV_NO_DEFAULT = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")


def load(name: str) -> dict:
    data = yaml.safe_load((COMPOSE / name).read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), name
    return data


def merge(base, over):
    """Compose's override merge, as far as these checks need it: mappings merge key by key,
    sequences (ports, volumes, command lists are replaced by compose but never overridden here)
    concatenate without duplicates, scalars are replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    if isinstance(base, list) and isinstance(over, list):
        return base + [v for v in over if v not in base]
    return over


def merged(*names: str) -> dict:
    out: dict = {}
    for n in names:
        out = merge(out, load(n))
    return out


def our_services() -> dict[str, str]:
    """Our services (the compose services built from compose/Dockerfile) -> the folder that holds
    their code, as the native stack declares it. The worker is "<engine>-worker" (the runner's
    process name; "kafka" is the broker's compose service)."""
    ours = [name for name, svc in load("core.yaml")["services"].items() if "build" in svc]
    assert ours and set(ours) <= set(NATIVE), f"{ours}: not all in the native stack {sorted(NATIVE)}"
    return {name: NATIVE[name].code for name in ours}


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


STACKS = {
    "core": ("core.yaml",),
    "core+serving": ("core.yaml", "serving.yaml"),
    "core+observability": ("core.yaml", "observability.yaml"),
    "all": tuple(LAYERS),
}


def test_every_layer_parses_and_uses_known_top_level_keys():
    for name in LAYERS:
        data = load(name)
        extra = {k for k in data if not k.startswith("x-")} - {"name", "services", "volumes", "networks", "configs", "secrets"}
        assert not extra, f"{name}: unknown top-level keys {extra}"


@pytest.mark.parametrize("stack", STACKS)
def test_every_service_is_complete_and_healthchecked(stack):
    services = merged(*STACKS[stack])["services"]
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{stack}: {name} has neither image nor build"
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable"), f"{stack}: {name} has no healthcheck"
        test = hc["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, (name, test)
        for key in ("interval", "timeout", "retries"):
            assert key in hc, f"{stack}: {name} healthcheck lacks {key}"


@pytest.mark.parametrize("stack", STACKS)
def test_depends_on_waits_for_healthy_services_of_the_stack(stack):
    services = merged(*STACKS[stack])["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must be the long form with a condition"
        for dep, spec in deps.items():
            assert dep in services, f"{stack}: {name} depends on {dep}, not in this stack"
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}: {spec}"


def _published(port) -> tuple[str | None, str]:
    if isinstance(port, dict):
        return (port.get("host_ip"), str(port.get("published")))
    parts = str(port).split(":")
    if len(parts) == 3:
        return parts[0], parts[1]
    return None, parts[0]  # "9092:9092" or "9092": all interfaces


def test_published_ports_bind_loopback_only_and_do_not_clash():
    seen: dict[str, str] = {}
    for layer in LAYERS:
        for name, svc in load(layer)["services"].items():
            for port in svc.get("ports") or []:
                if isinstance(port, str):
                    assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+(/(tcp|udp))?", port), f"{layer}: {name}: {port!r}"
                host_ip, published = _published(port)
                assert host_ip == "127.0.0.1", f"{layer}: {name} publishes {port!r} beyond loopback"
                assert published not in seen, f"port {published}: {seen.get(published)} and {name}"
                seen[published] = name
            assert "network_mode" not in svc or svc["network_mode"] != "host", f"{name}: host network"
    assert seen, "no published port found in the compose layers: the loopback check would prove nothing"


def test_one_name_per_service():
    services = merged(*LAYERS)["services"]
    ours = our_services()
    for name, folder in {**ours, **EXTERNAL_SERVERS}.items():
        assert name in services, f"{name} missing from the stack"
        assert (REPO / folder).is_dir(), f"{name}: folder {folder} is gone"
    for name, svc in services.items():
        env = env_of(svc)
        if name in ours:
            assert env.get("OTEL_SERVICE_NAME") == name, f"{name}: OTEL_SERVICE_NAME {env.get('OTEL_SERVICE_NAME')!r}"
            assert svc["build"] == {"context": "..", "dockerfile": "compose/Dockerfile"}, name
            assert not svc.get("container_name"), f"{name}: container_name breaks scaling"
        elif "OTEL_SERVICE_NAME" in env:
            assert env["OTEL_SERVICE_NAME"] == name, name
    # the scoring server also names itself in its logs and records
    scoring = json.loads((COMPOSE / "config" / "scoring.json").read_text())
    assert scoring.get("service_name", "scoring") == "scoring"


def test_native_stack_runs_the_compose_services_under_their_names():
    """`make up` (services/stack) runs the services of compose/core.yaml plus the observability
    layer's Jaeger: the same names (= process name = OTEL_SERVICE_NAME there), the same
    depends_on, and each name is also the port settings' prefix in compose/native/stack.yaml."""
    core = load("core.yaml")["services"]
    observability = load("observability.yaml")["services"]
    assert NATIVE_FROM_OBSERVABILITY <= set(observability)
    assert set(NATIVE) == set(core) | NATIVE_FROM_OBSERVABILITY, \
        f"native {sorted(NATIVE)} vs compose {sorted(set(core) | NATIVE_FROM_OBSERVABILITY)}"
    compose = merged("core.yaml", "observability.yaml")["services"]
    for name, svc in NATIVE.items():
        wanted = {dep for dep in compose[name].get("depends_on") or {} if dep in NATIVE}
        assert set(svc.depends_on) == wanted, f"{name}: native depends on {svc.depends_on}, compose on {wanted}"
        assert (REPO / svc.code).is_dir(), f"{name}: folder {svc.code} is gone"
    native_cfg = yaml.safe_load((COMPOSE / "native" / "stack.yaml").read_text())
    prefixes = {key.split("_")[0] for key in native_cfg["ports"]}
    assert prefixes <= {name.replace("-", "_") for name in NATIVE}, prefixes
    # the compose ports the native stack uses by default are the ones compose publishes
    published = {int(str(p).split(":")[1]) for layer in LAYERS for svc in load(layer)["services"].values()
                 for p in svc.get("ports") or []}
    for key in ("kafka", "scoring", "jaeger_otlp_grpc", "jaeger_otlp_http", "jaeger_query"):
        assert native_cfg["ports"][key] in published, f"ports.{key} = {native_cfg['ports'][key]}"


def test_only_standard_otel_variables():
    for layer in LAYERS:
        for name, svc in load(layer)["services"].items():
            odd = {k for k in env_of(svc) if k.startswith("OTEL_")} - STANDARD_OTEL
            assert not odd, f"{layer}: {name} sets non-standard {odd}"


def test_observability_layer_points_our_services_at_jaeger():
    core_only = merged("core.yaml")["services"]
    services = merged(*LAYERS)["services"]
    assert "jaeger" in services and any(":4317" in str(p) for p in services["jaeger"]["ports"])
    for name in our_services():
        env = env_of(services[name])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317", name
        assert env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "grpc", name
        assert services[name]["depends_on"]["jaeger"]["condition"] == "service_healthy", name
        # the core layer alone exports nowhere (no dangling endpoint to a missing jaeger)
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of(core_only[name]), name
    # the observability layer only adds settings to our services, never redefines them
    obs = load("observability.yaml")["services"]
    for name in our_services():
        assert set(obs[name]) <= {"environment", "depends_on"}, name


def test_no_literal_passwords_or_secrets():
    files = [COMPOSE / n for n in LAYERS] + sorted((COMPOSE / "observability").rglob("*.y*ml"))
    for path in files:
        text = path.read_text()
        for m in re.finditer(r"(?im)^\s*-?\s*['\"]?([A-Za-z0-9_.]*(?:password|passwd|secret|token|api_?key)[A-Za-z0-9_.]*)['\"]?\s*[:=]\s*(.*)$", text):
            value = m.group(2).split(" #")[0].strip().strip("'\"")
            assert value == "" or FROM_ENV_NO_DEFAULT.match(value), \
                f"{path.relative_to(REPO)}: {m.group(1)} has a literal value"
    for layer in LAYERS:
        for name, svc in load(layer)["services"].items():
            for k, v in env_of(svc).items():
                if SECRETISH.search(k):
                    assert FROM_ENV_NO_DEFAULT.match(v), f"{layer}: {name}: {k} must come from the environment, no default"
    grafana = env_of(load("observability.yaml")["services"]["grafana"])
    assert grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    ds = yaml.safe_load((COMPOSE / "observability/grafana/provisioning/datasources/datasources.yaml").read_text())
    for d in ds["datasources"]:
        assert not ({"secureJsonData", "basicAuthPassword", "password"} & set(d)), d["name"]


def test_mounted_files_from_compose_exist():
    for layer in LAYERS:
        for name, svc in load(layer)["services"].items():
            for vol in svc.get("volumes") or []:
                src = vol["source"] if isinstance(vol, dict) else vol.split(":")[0]
                if not src.startswith("."):
                    continue  # a named volume
                path = (COMPOSE / src).resolve()
                if path.is_relative_to(REPO / ".cache"):
                    # built locally (make models / the tensorflow env): refused at start when missing
                    assert isinstance(vol, dict) and vol["bind"]["create_host_path"] is False, (name, src)
                    continue
                assert path.exists(), f"{layer}: {name} mounts missing {src}"
    build = load("core.yaml")["services"]["scoring"]["build"]
    assert (COMPOSE / build["context"] / build["dockerfile"]).is_file()
    assert (COMPOSE / "Dockerfile.dockerignore").is_file()


def test_configs_validate_against_the_services_settings():
    cfg = COMPOSE / "config"
    scoring = ScoringSettings.model_validate(json.loads((cfg / "scoring.json").read_text()))
    worker = WorkerSettings.model_validate_json((cfg / "kafka-worker.json").read_text())
    collector = CollectorSettings.model_validate_json((cfg / "collector.json").read_text())
    core = load("core.yaml")["services"]
    # reachable from the other containers, on the port the stack publishes and probes
    assert scoring.host == "0.0.0.0" and f"127.0.0.1:{scoring.port}:{scoring.port}" in core["scoring"]["ports"]
    assert f"127.0.0.1:{scoring.port}'" in core["scoring"]["healthcheck"]["test"][-1]
    assert worker.external and worker.external.target == f"scoring:{scoring.port}"
    assert worker.bootstrap == collector.bootstrap == "kafka:19092"
    assert "INTERNAL://kafka:19092" in env_of(core["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert (collector.output_topic, collector.dead_letter_topic, collector.input_topic, collector.worker_group) == \
        (worker.output_topic, worker.dead_letter_topic, worker.input_topic, worker.consumer_group)
    # every service's --config file is the one it mounts
    for name in our_services():
        cmd = " ".join(core[name]["command"])
        target = f"/etc/crayfish/{name}.json"
        assert f"@{target}" in cmd, name
        assert any(str(v).endswith(f":{target}:ro") for v in core[name]["volumes"]), name


def test_topic_helper_matches_the_worker_config():
    spec = importlib.util.spec_from_file_location("compose_topics", COMPOSE / "topics.py")
    topics = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(topics)
    worker = json.loads((COMPOSE / "config" / "kafka-worker.json").read_text())
    assert topics.topic_specs(worker, 2) == {worker["input_topic"]: 2, worker["output_topic"]: 2,
                                              worker["dead_letter_topic"]: 1}


def _python_healthcheck(service: str) -> str:
    test = load("core.yaml")["services"][service]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    return test[3]


def test_worker_healthcheck_compiles():
    compile(_python_healthcheck("kafka-worker"), "kafka-worker healthcheck", "exec")


def test_scoring_healthcheck_answers_against_a_real_server(tmp_path):
    """Run the compose healthcheck one-liner (pointed at a free port) against a real Scoring
    server: non-zero before it is up, zero once it says SERVING."""
    probe = _python_healthcheck("scoring")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    probe = probe.replace("127.0.0.1:50051", f"127.0.0.1:{port}")
    assert f"127.0.0.1:{port}" in probe

    def check() -> int:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30).returncode

    assert check() != 0  # nothing listens yet
    ready = tmp_path / "ready"
    cfg = {"models": ["ffnn"], "backend": "noop", "port": port, "ready_file": str(ready)}
    proc = subprocess.Popen([sys.executable, "-m", "serving.scoring", "--config", json.dumps(cfg)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OTEL_SERVICE_NAME": "scoring"})
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "scoring server not ready in 60 s"
            time.sleep(0.1)
        assert check() == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
