"""Start / stop the Ray Serve model server as its own process in the ``ray`` environment.

See :mod:`serving.rayserve` for what runs and every knob; in short::

    from serving.rayserve import launcher

    srv = launcher.start("ffnn", instances=2)          # Ray + Serve + app "ffnn", 2 replicas
    srv.target, srv.kind        # "127.0.0.1:PORT", "ray-serve"  (HTTP)
    srv.targets                 # {"ray-serve": "127.0.0.1:HTTP", "ray-serve-grpc": "127.0.0.1:GRPC"}
    srv.stop()
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from crayfish.host.envs import python_for
from crayfish.host.paths import cache_dir
from crayfish.host.procs import Service, wait_file
from serving.embedded import ScorerConfigError, check_scorer
from serving.models import MODELS, known_model
from serving.rayserve.client import RayServeGrpcClient, RayServeHttpClient
from serving.server import RunningServer

ENV_NAME = "ray"
KINDS = {"http": "ray-serve", "grpc": "ray-serve-grpc"}
# Ray's unix socket paths live under its temp dir and must stay under ~107 bytes: keep it short.

# A model that sleeps far past any test deadline (the conformance suite's hung_model).
HUNG_MODELS: dict[str, dict[str, Any]] = {
    "ffnn-hung": {"model": "ffnn", "backend": "sleep", "options": {"delay_ms": 5000},
                  "instances": 1, "replica_cpus": 0, "warmup": False},
}

# launcher option -> default (None: computed)
OPTIONS: dict[str, Any] = {
    "backend": "onnxruntime",
    "backend_options": None,          # default for onnxruntime: 1 intra-op, 1 inter-op thread
    "protocol": "http",               # which of the two endpoints RunningServer.target/kind names
    "max_ongoing_requests": 5,        # per replica (Ray's default); more wait in the proxy
    "replica_cpus": 1.0,              # Ray logical CPUs each replica reserves
    "num_cpus": None,                 # Ray logical CPUs: max(cpu_count, sum of replica_cpus)
    "object_store_mb": 256,
    "http_port": 0,                   # 0: a free port
    "grpc_port": 0,
    "request_timeout_s": None,        # Ray proxies' end-to-end timeout (None: none)
    "keep_alive_timeout_s": 60,       # HTTP proxy's idle keep-alive (uvicorn)
    "access_log": False,
    "serve_log_level": "WARNING",
    "temp_dir": None,                 # Ray's temp/session dir (default .cache/ray)
    "ready_timeout_s": 180.0,
    "stop_timeout_s": 30.0,
}


def _model_entry(name: str, m: dict[str, Any], defaults: dict[str, Any], models_dir=None) -> dict[str, Any]:
    known = {"model", "backend", "options", "instances", "replica_cpus", "max_ongoing_requests", "warmup"}
    unknown = sorted(set(m) - known)
    if unknown:
        raise ValueError(f"rayserve model {name!r}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    base = m.get("model", name)
    if not known_model(base, models_dir):
        raise ValueError(f"rayserve model {name!r}: unknown base model {base!r}; known: {', '.join(sorted(MODELS))}")
    out = {**defaults, **m, "model": base}
    if int(out["instances"]) < 1:
        raise ValueError(f"rayserve model {name!r}: instances must be >= 1")
    return out


def _check_backend(name: str, m: dict[str, Any], models_dir) -> None:
    """Fail here, with the option's or the build command's name, rather than in a Ray replica
    (where Serve would retry the deployment and bury the message in its logs)."""
    try:
        check_scorer(m["backend"], m["model"], models_dir, **(m.get("options") or {}))
    except ScorerConfigError as exc:
        raise ScorerConfigError(f"rayserve model {name!r}: {exc}") from None


def start(model: str = "ffnn", instances: int = 1, models_dir: Path | None = None,
          log_dir: Path | None = None, extra_models: dict | None = None, **options) -> RunningServer:
    """Launch Ray + Serve hosting ``model`` with ``instances`` replicas (the paper's mp) plus
    ``extra_models`` (served name -> {"model", "backend", "options", "instances", "replica_cpus",
    "max_ongoing_requests", "warmup"}; e.g. :data:`HUNG_MODELS`), wait until every model answers
    over HTTP and gRPC, and return the handle. ``options``: see :data:`OPTIONS`."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"rayserve launcher: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTIONS))}")
    opt = {**OPTIONS, **options}
    if opt["protocol"] not in KINDS:
        raise ValueError(f"rayserve launcher: protocol must be one of {', '.join(KINDS)}, got {opt['protocol']!r}")
    backend_options = opt["backend_options"]
    if backend_options is None:
        backend_options = {"intra_op_threads": 1, "inter_op_threads": 1} if opt["backend"] == "onnxruntime" else {}

    defaults = {"backend": opt["backend"], "options": backend_options, "instances": instances,
                "replica_cpus": opt["replica_cpus"], "max_ongoing_requests": opt["max_ongoing_requests"],
                "warmup": True}
    models = {model: _model_entry(model, {}, defaults, models_dir)}
    for name, m in (extra_models or {}).items():
        if name in models:
            raise ValueError(f"rayserve launcher: model {name!r} given twice")
        extra_defaults = {**defaults, "instances": 1}
        if m.get("backend", opt["backend"]) != opt["backend"]:
            extra_defaults["options"] = {}   # the main backend's options don't apply to another
        models[name] = _model_entry(name, dict(m), extra_defaults, models_dir)

    for name, m in models.items():
        _check_backend(name, m, models_dir)

    cpus = sum(float(m["replica_cpus"]) * int(m["instances"]) for m in models.values())
    num_cpus = opt["num_cpus"] or max(os.cpu_count() or 1, int(-(-cpus // 1)))

    log_dir = Path(log_dir or cache_dir("rayserve", "logs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(opt["temp_dir"] or cache_dir("ray"))
    temp_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(2)}"
    ready_file = log_dir / f"rayserve-{stamp}.ready.json"
    config_file = log_dir / f"rayserve-{stamp}.config.json"
    cfg = {
        "host": "127.0.0.1",
        "http_port": int(opt["http_port"]),
        "grpc_port": int(opt["grpc_port"]),
        "num_cpus": int(num_cpus),
        "object_store_mb": int(opt["object_store_mb"]),
        "temp_dir": str(temp_dir),
        "ready_file": str(ready_file),
        "models_dir": str(models_dir) if models_dir is not None else None,
        "request_timeout_s": opt["request_timeout_s"],
        "keep_alive_timeout_s": int(opt["keep_alive_timeout_s"]),
        "access_log": bool(opt["access_log"]),
        "serve_log_level": opt["serve_log_level"],
        "models": models,
    }
    config_file.write_text(json.dumps(cfg, indent=2))
    log_path = log_dir / f"rayserve-{stamp}.log"
    env = {
        # a fresh token per launch, in the environment only: Ray's token auth stays on and
        # nothing is written under ~/.ray
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",        # no usage reporting (and no network attempt)
        "RAY_ADDRESS": "",                     # never join some other cluster
        # single-node mode: Ray keeps 127.0.0.1 as the node address instead of swapping it for
        # the host's routable IP (its agents then listen on loopback only)
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_DEDUP_LOGS": "0",
        "OMP_NUM_THREADS": "1",
    }
    service = Service("rayserve", ["-m", "serving.rayserve.app", "--config", str(config_file)],
                      log_path, python=python_for(ENV_NAME), env=env)
    # SIGTERM the driver alone first (it shuts Serve and Ray down), then SIGKILL whatever of its
    # process tree is left after stop_timeout_s: no orphan survives
    running = RunningServer(server="", targets={}, service=service, log_path=log_path, models=list(models),
                            stop_timeout_s=float(opt["stop_timeout_s"]), leader_first=True)
    try:
        deadline = time.monotonic() + float(opt["ready_timeout_s"])
        wait_file(ready_file, [service], float(opt["ready_timeout_s"]), what="Ray Serve")
        info = json.loads(ready_file.read_text())
        running.info.update(info)
        running.server = info["server"]
        # the protocol asked for first: it is the handle's kind / target
        ordered = [opt["protocol"], *(p for p in KINDS if p != opt["protocol"])]
        running.targets = {KINDS[p]: info[p] for p in ordered}
        _wait_serving(running, service, deadline)
    except BaseException:
        running.stop()
        raise
    return running


def _wait_serving(running: RunningServer, service: Service, deadline: float) -> None:
    """Real readiness: every model answers its health route (HTTP) and DescribeModel (gRPC)."""
    for name in running.models:
        for cls in (RayServeHttpClient, RayServeGrpcClient):
            client = cls(running.targets[cls.kind], name, timeout_s=5.0)
            try:
                client.wait_ready(timeout_s=max(1.0, deadline - time.monotonic()))
            finally:
                client.close()
            service.check_alive()
