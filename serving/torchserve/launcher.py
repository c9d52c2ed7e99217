"""Start / stop TorchServe hosting the TorchScript models (the zoo's exports, or a TorchScript /
ONNX model file of one's own imported into the models dir), in the ``torch`` environment.

See :mod:`serving.torchserve` for what runs and every knob; in short::

    from serving.torchserve import launcher

    srv = launcher.start("ffnn", instances=2, extra_models=launcher.HUNG_MODELS)
    srv.target, srv.kind, srv.server   # "127.0.0.1:PORT" (gRPC inference), "torchserve", "torchserve 0.12.0"
    srv.info                           # management_target, http URLs, key_file, run_dir, models, ...
    client = create_client("torchserve", srv.target, "ffnn")   # finds the key file by itself
    srv.stop()
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from crayfish.host.envs import python_for
from crayfish.host.paths import REPO_ROOT, cache_dir
from crayfish.host.ports import free_ports
from crayfish.host.procs import Service, ServiceError
from serving.models import MODELS, build_model, default_models_dir, known_model
from serving.server import RunningServer
from serving.torchserve import grpc_stubs
from serving.torchserve.client import TorchServeClient, servers_dir

ENV_NAME = "torch"
KIND = "torchserve"
POLL_S = 0.1

# A model that sleeps far past any test deadline (the conformance suite's hung_model).
HUNG_MODELS: dict[str, dict[str, Any]] = {
    "ffnn-hung": {"model": "ffnn", "sleep_s": 5.0, "instances": 1},
}
EXTRA_MODEL_KEYS = {"model", "sleep_s", "instances", "batch_size", "max_batch_delay_ms"}

# launcher option -> default
OPTIONS: dict[str, Any] = {
    # Token authorization (on by default since TorchServe 0.11): "token" keeps it on -- TorchServe
    # writes key_file.json into the run dir and the client sends its keys; "off" starts with
    # --disable-token-auth (acceptable only because every listener binds 127.0.0.1).
    "auth": "token",
    "token_expiration_min": 7 * 24 * 60,   # TorchServe's default is 60: a long benchmark would lose auth
    # Handler / model (passed to the workers in their environment, see handler.py)
    "threads": 1,                  # torch intra-op threads per worker (torch.set_num_threads)
    "interop_threads": 1,          # torch inter-op threads per worker
    "device": "cpu",               # cpu | cuda
    "optimize": "freeze",          # none | freeze | inference (torch.jit.optimize_for_inference)
    "warmup": True,                # each worker scores a zero batch 3x when it loads
    # TorchServe's own knobs (config.properties / per-model config)
    "batch_size": 1,               # server-side batching: requests aggregated per worker call
    "max_batch_delay_ms": 100,     # how long the frontend waits to fill a batch (batch_size > 1)
    "response_timeout_s": 120,     # a worker call longer than this kills and restarts the worker
    "job_queue_size": 100,         # per-model queue in the frontend; full -> OverloadedError
    "netty_threads": 0,            # frontend I/O threads (0: one per core)
    "netty_client_threads": 0,     # frontend <-> worker threads (0: one per core)
    "max_message_mb": 256,         # max_request_size / max_response_size (gRPC inbound limit)
    "system_metrics": False,       # TorchServe's per-minute system-metrics collector (a python process)
    # "warn": frontend logs warnings only, no access/metrics logs, workers log warnings only;
    # "info": the same at INFO (access log on); "default": TorchServe's stock log4j2.xml (DEBUG,
    # ~12 lines per request to the console and to files) and the workers' INFO logging.
    "log_level": "warn",
    # IPv4 sockets (else Java listens on ::ffff:127.0.0.1, the same loopback, IPv6-mapped)
    "jvm_args": ["-Xmx2g", "-XX:+UseG1GC", "-Djava.net.preferIPv4Stack=true"],
    "ready_timeout_s": 300.0,
    "stop_timeout_s": 10.0,       # SIGTERM -> SIGKILL (Java waits for open gRPC calls)
}


def _store_for(models_dir: Path) -> Path:
    """One model store per models dir (archives embed that dir's TorchScript files)."""
    return cache_dir("torchserve", "model-store") / hashlib.sha256(str(models_dir.resolve()).encode()).hexdigest()[:12]


def _model_entries(model: str, instances: int, extra: dict | None, opt: dict,
                   models_dir: Path | None = None) -> dict[str, dict]:
    if not known_model(model, models_dir):
        raise ValueError(f"torchserve launcher: unknown model {model!r}; known: {', '.join(sorted(MODELS))}, "
                         "or a model file imported into the models dir")
    if instances < 1:
        raise ValueError("torchserve launcher: instances must be >= 1")
    entries = {model: {"model": model, "sleep_s": 0.0, "instances": instances,
                       "batch_size": opt["batch_size"], "max_batch_delay_ms": opt["max_batch_delay_ms"]}}
    for name, cfg in (extra or {}).items():
        unknown = sorted(set(cfg) - EXTRA_MODEL_KEYS)
        if unknown:
            raise ValueError(f"torchserve launcher: extra model {name!r}: unknown key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(EXTRA_MODEL_KEYS))}")
        if name in entries:
            raise ValueError(f"torchserve launcher: model {name!r} given twice")
        entries[name] = {"model": cfg.get("model", name), "sleep_s": float(cfg.get("sleep_s", 0.0)),
                         "instances": int(cfg.get("instances", 1)),
                         "batch_size": int(cfg.get("batch_size", opt["batch_size"])),
                         "max_batch_delay_ms": int(cfg.get("max_batch_delay_ms", opt["max_batch_delay_ms"]))}
    return entries


def build_archives(entries: dict[str, dict], models_dir: Path, python: str) -> Path:
    """Export + archive every served model in the torch env (cached); returns the model store."""
    for e in entries.values():
        if e["model"] in MODELS:   # a model file of one's own is imported already: the file is the model
            build_model(e["model"], models_dir)
    store = _store_for(models_dir)
    cmd = [python, "-m", "serving.torchserve.build", "--store", str(store), "--models-dir", str(models_dir)]
    for name, e in entries.items():
        cmd += ["--archive", f"{name}={json.dumps({'model': e['model'], 'sleep_s': e['sleep_s']})}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    if proc.returncode != 0:
        raise ServiceError(f"building TorchServe archives failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return store


def _config(ports: dict[str, int], store: Path, entries: dict[str, dict], opt: dict) -> str:
    models = {name: {"1.0": {"defaultVersion": True, "marName": f"{name}.mar",
                             "minWorkers": e["instances"], "maxWorkers": e["instances"],
                             "batchSize": e["batch_size"], "maxBatchDelay": e["max_batch_delay_ms"],
                             "responseTimeout": int(opt["response_timeout_s"])}}
              for name, e in entries.items()}
    mb = int(opt["max_message_mb"]) * 1024 * 1024
    lines = {
        "inference_address": f"http://127.0.0.1:{ports['http_inference']}",
        "management_address": f"http://127.0.0.1:{ports['http_management']}",
        "metrics_address": f"http://127.0.0.1:{ports['http_metrics']}",
        "grpc_inference_address": "127.0.0.1",
        "grpc_management_address": "127.0.0.1",
        "grpc_inference_port": ports["grpc_inference"],
        "grpc_management_port": ports["grpc_management"],
        "model_store": str(store),
        "load_models": ",".join(f"{name}={name}.mar" for name in entries),
        "models": json.dumps(models),
        "default_workers_per_model": 1,
        "default_response_timeout": int(opt["response_timeout_s"]),
        "job_queue_size": int(opt["job_queue_size"]),
        "number_of_netty_threads": int(opt["netty_threads"]),
        "netty_client_threads": int(opt["netty_client_threads"]),
        "max_request_size": mb,
        "max_response_size": mb,
        "disable_token_authorization": str(opt["auth"] == "off").lower(),
        "token_expiration_min": int(opt["token_expiration_min"]),
        "enable_model_api": "false",      # no register/unregister over the API: models come from here
        "disable_system_metrics": str(not opt["system_metrics"]).lower(),
        "install_py_dep_per_model": "false",
        "enable_envvars_config": "false",
        "enable_metrics_api": "true",
    }
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def _log4j_config(ts_home: Path, level: str) -> str:
    """TorchServe's own log4j2.xml (from its jar: same appenders and files) with the levels
    lowered to ``level``: the frontend's DEBUG logger and the root to ``level``, the access log
    to ``level`` (INFO keeps one line per request), the metrics logs off. MODEL_LOG (what the
    workers print) stays on: tracebacks and warnings of the workers still reach the logs."""
    with zipfile.ZipFile(ts_home / "frontend" / "model-server.jar") as jar:
        xml = jar.read("log4j2.xml").decode()
    for logger, lvl in (("ACCESS_LOG", level), ("org.pytorch.serve", level),
                        ("TS_METRICS", "off"), ("MODEL_METRICS", "off")):
        xml, n = re.subn(rf'(<Logger name="{re.escape(logger)}" level=")[^"]*"', rf'\g<1>{lvl}"', xml)
        if n != 1:
            raise ServiceError(f"unexpected TorchServe log4j2.xml: logger {logger} not found")
    xml, n = re.subn(r'(<Root level=")[^"]*"', rf'\g<1>{level}"', xml)
    if n != 1:
        raise ServiceError("unexpected TorchServe log4j2.xml: no Root logger")
    return xml


def _server_env(opt: dict, logs: Path) -> dict[str, str]:
    """The frontend's environment, which TorchServe hands to its workers: where logs go and the
    handler's options (see serving/torchserve/handler.py)."""
    return {"LOG_LOCATION": str(logs), "METRICS_LOCATION": str(logs),
            "CRAYFISH_TS_THREADS": str(int(opt["threads"])),
            "CRAYFISH_TS_INTEROP_THREADS": str(int(opt["interop_threads"])),
            "CRAYFISH_TS_DEVICE": opt["device"], "CRAYFISH_TS_OPTIMIZE": opt["optimize"],
            "CRAYFISH_TS_WARMUP": "1" if opt["warmup"] else "0",
            "CRAYFISH_TS_QUIET": "0" if opt["log_level"] == "default" else "1",
            # one thread per worker unless asked: OpenMP/MKL would otherwise start one per core
            "OMP_NUM_THREADS": str(max(1, int(opt["threads"])))}


def start(model: str = "ffnn", instances: int = 1, models_dir: Path | None = None,
          log_dir: Path | None = None, extra_models: dict | None = None, **options) -> RunningServer:
    """Launch TorchServe hosting ``model`` with ``instances`` workers (the paper's mp) plus
    ``extra_models`` (served name -> {"model", "sleep_s", "instances", "batch_size",
    "max_batch_delay_ms"}; e.g. :data:`HUNG_MODELS`), wait until every model has all its workers
    READY, and return the handle. ``options``: see :data:`OPTIONS`.

    :meth:`RunningServer.stop` SIGTERMs the process group (the Java frontend and its Python
    workers) and every process of its session, SIGKILLs what is left after ``stop_timeout_s``,
    and removes the key file, the server record and the worker temp dir: no orphan survives."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"torchserve launcher: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTIONS))}")
    opt = {**OPTIONS, **options}
    if opt["auth"] not in ("token", "off"):
        raise ValueError(f"torchserve launcher: auth must be 'token' or 'off', got {opt['auth']!r}")
    if opt["log_level"] not in ("warn", "info", "default"):
        raise ValueError(f"torchserve launcher: log_level must be warn, info or default, got {opt['log_level']!r}")
    if opt["device"] not in ("cpu", "cuda"):
        raise ValueError(f"torchserve launcher: device must be 'cpu' or 'cuda', got {opt['device']!r}")
    models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
    entries = _model_entries(model, instances, extra_models, opt, models_dir)

    python = python_for(ENV_NAME)
    store = build_archives(entries, models_dir, python)
    ts_home = grpc_stubs.find_ts_home()
    version = grpc_stubs.torchserve_version(ts_home)
    grpc_stubs.load()  # generate the client stubs now, not in the first client

    log_dir = Path(log_dir or cache_dir("torchserve", "logs"))
    run_dir = log_dir / f"torchserve-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    run_dir.mkdir(parents=True, exist_ok=True)
    # Worker sockets (.ts.sock.<port>) and extracted archives go to java.io.tmpdir: one short,
    # private dir per server (Unix socket paths must stay under ~107 bytes; 9000+ ports repeat).
    tmp_dir = Path(tempfile.mkdtemp(prefix="ts-"))
    names = ["http_inference", "http_management", "http_metrics", "grpc_inference", "grpc_management"]
    ports = dict(zip(names, free_ports(len(names))))
    (run_dir / "config.properties").write_text(_config(ports, store, entries, opt))
    jvm_args = list(opt["jvm_args"])
    if opt["log_level"] != "default":
        log_config = run_dir / "log4j2.xml"
        log_config.write_text(_log4j_config(ts_home, opt["log_level"]))
        jvm_args.append(f"-Dlog4j.configurationFile=file://{log_config}")
    (run_dir / "launch.json").write_text(json.dumps({
        "model_store": str(store), "tmp_dir": str(tmp_dir), "jvm_args": jvm_args,
        "disable_token_auth": opt["auth"] == "off"}, indent=2))
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    svc = Service("torchserve", ["-m", "serving.torchserve", str(run_dir)], run_dir / "torchserve.log",
                  python=python, env=_server_env(opt, logs))
    target = f"127.0.0.1:{ports['grpc_inference']}"
    key_file = run_dir / "key_file.json" if opt["auth"] == "token" else None
    info: dict[str, Any] = {
        "management_target": f"127.0.0.1:{ports['grpc_management']}",
        "http": {"inference": f"http://127.0.0.1:{ports['http_inference']}",
                 "management": f"http://127.0.0.1:{ports['http_management']}",
                 "metrics": f"http://127.0.0.1:{ports['http_metrics']}"},
        "key_file": key_file,          # TorchServe's key_file.json (None with auth="off")
        "models": entries,             # served name -> settings
        "run_dir": run_dir,
        "info_path": None,             # the server record clients find the key file by
        "version": version,
    }

    def remove_leftovers() -> None:
        for p in (info["info_path"], key_file):
            if p is not None:
                Path(p).unlink(missing_ok=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)

    srv = RunningServer(server=f"torchserve {version}", targets={KIND: target}, service=svc,
                        models=list(entries), log_path=run_dir / "torchserve.log", info=info,
                        stop_timeout_s=float(opt["stop_timeout_s"]), cleanup=[remove_leftovers])
    try:
        _wait_ready(srv, svc, float(opt["ready_timeout_s"]))
        info["info_path"] = _record(srv, svc.proc.pid)
    except BaseException:
        srv.stop()
        raise
    return srv


def _record(srv: RunningServer, pid: int) -> Path:
    """``.cache/torchserve/servers/<host>_<port>.json``: how clients of ``srv.target`` find the
    management API and the key file (its path only; the keys stay in TorchServe's file)."""
    d = servers_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / (srv.target.replace(":", "_") + ".json")
    key_file = srv.info["key_file"]
    record = {"target": srv.target, "management_target": srv.info["management_target"],
              "http": srv.info["http"], "key_file": str(key_file) if key_file else None,
              "version": srv.info["version"], "pid": pid, "models": sorted(srv.models),
              "run_dir": str(srv.info["run_dir"])}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def _wait_ready(srv: RunningServer, svc: Service, timeout_s: float) -> None:
    """Ready = the key file exists (auth on) and, through the gRPC management API, every served
    model has as many READY workers as it was given."""
    key_file: Path | None = srv.info["key_file"]
    deadline = time.monotonic() + timeout_s
    last: object = "not started"
    clients: dict[str, TorchServeClient] = {}
    try:
        while time.monotonic() < deadline:
            svc.check_alive()
            if key_file is not None and not key_file.is_file():
                last = "no key_file.json yet"
                time.sleep(POLL_S)
                continue
            pending = []
            for name, e in srv.info["models"].items():
                try:
                    if name not in clients:
                        clients[name] = TorchServeClient(srv.target, name, timeout_s=5.0,
                                                         key_file=str(key_file) if key_file else None,
                                                         management_target=srv.info["management_target"])
                    desc = clients[name]._describe_model(customized=False, timeout_s=5.0)
                    ready = sum(w.get("status") == "READY" for d in desc for w in d.get("workers", []))
                    if ready < e["instances"]:
                        pending.append(f"{name}: {ready}/{e['instances']} workers READY")
                except Exception as exc:  # noqa: BLE001 - not up yet
                    pending.append(f"{name}: {type(exc).__name__}: {exc}")
            if not pending:
                return
            last = "; ".join(pending)
            time.sleep(POLL_S)
        raise ServiceError(f"TorchServe not ready after {timeout_s:.0f}s ({last}):\n{svc.log_tail()}")
    finally:
        for c in clients.values():
            c.close()
