"""Start / stop Triton Inference Server (through PyTriton) as its own process in the ``triton``
environment. See :mod:`serving.triton` for what runs and every knob; in short::

    from serving.triton import launcher

    srv = launcher.start("ffnn", instances=2, extra_models=launcher.HUNG_MODELS)
    srv.target, srv.kind, srv.server   # "127.0.0.1:PORT", "triton", "triton 2.51.0 (pytriton 0.7.0)"
    srv.stats()                        # what the instances saw (see serving.triton.server)
    srv.info["workdir"]                # PyTriton's workspace + the server's TMPDIR; removed at stop
    srv.stop()
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from crayfish.host.envs import python_for
from crayfish.host.paths import cache_dir
from crayfish.host.procs import Service, ServiceError, wait_file
from serving.embedded import check_scorer
from serving.models import MODELS, build_model, default_models_dir, known_model, model_paths
from serving.server import RunningServer
from serving.triton.client import TritonClient

ENV_NAME = "triton"
KIND = "triton"
STATS_FILE = "stats.json"        # in the work dir: RunningServer.stats()
POLL_S = 0.05

# A model that sleeps far past any test deadline (the conformance suite's hung_model).
HUNG_MODELS: dict[str, dict[str, Any]] = {
    "ffnn-hung": {"model": "ffnn", "backend": "sleep", "options": {"delay_ms": 5000}, "instances": 1},
}

# the embedded backends whose library the triton environment has (envs/triton/requirements.txt)
BACKENDS = ("onnxruntime", "sleep", "noop")
MODEL_KEYS = {"model", "backend", "options", "instances", "max_batch_size", "batching"}
BATCHING_KEYS = {"max_batch_size", "max_queue_delay_us", "preferred_batch_size"}

# launcher option -> default (None: computed / off)
OPTIONS: dict[str, Any] = {
    "backend": "onnxruntime",
    "backend_options": None,      # default for onnxruntime: 1 intra-op, 1 inter-op thread
    "max_batch_size": 1024,       # Triton's max_batch_size: the largest batch of one request
    "batching": None,             # Triton's dynamic batcher: {"max_batch_size", "max_queue_delay_us", ...}
    "grpc_port": 0,               # 0: a free port
    "http": False,                # Triton's HTTP/REST endpoint (127.0.0.1) -- the client uses gRPC
    "http_port": 0,
    "metrics": False,             # Prometheus metrics endpoint (127.0.0.1)
    "metrics_port": 0,
    "log_verbose": 0,             # tritonserver --log-verbose
    "exit_timeout_s": 5,          # tritonserver --exit-timeout-secs (in-flight requests at exit)
    "ready_timeout_s": 180.0,
    "stop_timeout_s": 30.0,
    "python": None,               # interpreter (default: the triton environment's)
}


def _remove_shm(pid: int) -> None:
    """PyTriton names its shared-memory regions ``pytrtion<pid>-<hash>...`` (sic); after a clean
    stop there are none, after a SIGKILL these would stay."""
    shm = Path("/dev/shm")
    if shm.is_dir():
        for p in shm.glob(f"pytrtion{pid}-*"):
            try:
                p.unlink()
            except OSError:
                pass


def _remove_triton_model_copies(workdir: Path) -> None:
    """Triton writes every model loaded with its files in the request (PyTriton's way) to
    ``/tmp/folderXXXXXX`` -- ignoring TMPDIR -- and removes it at unload; a model unloaded with
    a request still in flight (the hung model) leaves its copy. Ours name our work dir in their
    config.pbtxt (PyTriton's ``workspace-path`` parameter)."""
    marker = str(workdir)
    for cfg in glob.glob(os.path.join(tempfile.gettempdir(), "folder*", "config.pbtxt")) + \
            glob.glob("/tmp/folder*/config.pbtxt"):
        try:
            if marker in Path(cfg).read_text(errors="replace"):
                shutil.rmtree(Path(cfg).parent, ignore_errors=True)
        except OSError:
            pass


def _model_entry(name: str, m: dict[str, Any], defaults: dict[str, Any], models_dir: Path | None) -> dict[str, Any]:
    """The server.py config of one served model (its base model built when its backend reads
    files), its backend and options checked here rather than inside the server."""
    unknown = sorted(set(m) - MODEL_KEYS)
    if unknown:
        raise ValueError(f"triton model {name!r}: unknown key(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(MODEL_KEYS))}")
    e = {**defaults, **m}
    base = e.get("model") or name
    if not known_model(base, models_dir):
        raise ValueError(f"triton model {name!r}: unknown base model {base!r}; known: {', '.join(sorted(MODELS))}")
    if e["backend"] not in BACKENDS:
        raise ValueError(f"triton model {name!r}: unknown backend {e['backend']!r}; known: {', '.join(BACKENDS)}")
    if int(e["instances"]) < 1:
        raise ValueError(f"triton model {name!r}: instances must be >= 1")
    out: dict[str, Any] = {
        "model": base,
        "backend": e["backend"],
        "options": dict(e.get("options") or {}),
        "instances": int(e["instances"]),
        "max_batch_size": int(e["max_batch_size"]),
    }
    batching = e.get("batching")
    if batching is not None:
        bad = sorted(set(batching) - BATCHING_KEYS)
        if bad or "max_batch_size" not in batching:
            raise ValueError(f"triton model {name!r}: batching takes max_batch_size (required), "
                             f"max_queue_delay_us, preferred_batch_size; got {sorted(batching)}")
        out["max_batch_size"] = int(batching["max_batch_size"])
        out["dynamic_batching"] = {"max_queue_delay_us": int(batching.get("max_queue_delay_us", 0)),
                                   "preferred_batch_size": batching.get("preferred_batch_size")}
    if out["max_batch_size"] < 1:
        raise ValueError(f"triton model {name!r}: max_batch_size must be >= 1")
    if out["backend"] == "onnxruntime" and not model_paths(base, models_dir).exists():
        build_model(base, Path(models_dir) if models_dir is not None else default_models_dir(), seed=42)
    check_scorer(out["backend"], base, models_dir, **out["options"])
    return out


def start(model: str = "ffnn", instances: int = 1, models_dir: Path | None = None,
          log_dir: Path | None = None, extra_models: dict | None = None, **options) -> RunningServer:
    """Launch Triton (PyTriton) hosting ``model`` with ``instances`` instances (the paper's mp)
    plus ``extra_models`` (served name -> {"model", "backend", "options", "instances",
    "max_batch_size", "batching"}; e.g. :data:`HUNG_MODELS`), wait until every model is ready and
    describes itself over gRPC, and return the handle. ``options``: see :data:`OPTIONS`."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"triton launcher: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTIONS))}")
    opt = {**OPTIONS, **options}
    backend_options = opt["backend_options"]
    if backend_options is None:
        backend_options = {"intra_op_threads": 1, "inter_op_threads": 1} if opt["backend"] == "onnxruntime" else {}
    defaults = {"backend": opt["backend"], "options": backend_options, "instances": instances,
                "max_batch_size": opt["max_batch_size"], "batching": opt["batching"]}
    models = {model: _model_entry(model, {}, defaults, models_dir)}
    for name, m in (extra_models or {}).items():
        if name in models:
            raise ValueError(f"triton launcher: model {name!r} given twice")
        extra_defaults = {**defaults, "instances": 1}
        if m.get("backend", opt["backend"]) != opt["backend"]:
            extra_defaults["options"] = {}   # the main backend's options don't apply to another
        models[name] = _model_entry(name, dict(m), extra_defaults, models_dir)

    python = opt["python"] or python_for(ENV_NAME)     # builds the environment on first use

    log_dir = Path(log_dir or cache_dir("triton", "logs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(2)}"
    ready_file = log_dir / f"triton-{stamp}.ready.json"
    config_file = log_dir / f"triton-{stamp}.config.json"
    log_path = log_dir / f"triton-{stamp}.log"
    # short path: PyTriton puts unix sockets in its workspace
    workdir = Path(tempfile.mkdtemp(prefix="crayfish-triton-"))
    cfg = {
        "host": "127.0.0.1",
        "grpc_port": int(opt["grpc_port"]),
        "http": bool(opt["http"]),
        "http_port": int(opt["http_port"]),
        "metrics": bool(opt["metrics"]),
        "metrics_port": int(opt["metrics_port"]),
        "log_verbose": int(opt["log_verbose"]),
        "exit_timeout_s": int(opt["exit_timeout_s"]),
        "ready_file": str(ready_file),
        "stats_file": str(workdir / STATS_FILE),
        "workspace": str(workdir / "workspace"),
        "models_dir": str(models_dir) if models_dir is not None else None,
        "models": models,
    }
    config_file.write_text(json.dumps(cfg, indent=2))
    env = {"TMPDIR": str(workdir), "OMP_NUM_THREADS": "1"}
    service = Service("triton", ["-m", "serving.triton.server", "--config", str(config_file)],
                      log_path, python=python, env=env)
    pid = service.proc.pid
    running = RunningServer(
        server="", targets={}, service=service, models=list(models), log_path=log_path,
        info={"workdir": workdir}, stop_timeout_s=float(opt["stop_timeout_s"]),
        # SIGTERM server.py alone first: PyTriton stops Triton, unloads the models, removes its
        # workspace and shared memory; what is left of the session is killed after the timeout
        leader_first=True,
        cleanup=[lambda: _remove_shm(pid), lambda: _remove_triton_model_copies(workdir),
                 lambda: shutil.rmtree(workdir, ignore_errors=True)],
        stats_reader=lambda: _read_stats(workdir))
    try:
        deadline = time.monotonic() + float(opt["ready_timeout_s"])
        wait_file(ready_file, [service], float(opt["ready_timeout_s"]), what="Triton")
        info = json.loads(ready_file.read_text())
        running.info.update(info)
        running.targets[KIND] = f"{info['host']}:{info['grpc_port']}"
        running.server = _wait_serving(running, service, deadline)
    except BaseException:
        running.stop()
        raise
    return running


def _read_stats(workdir: Path) -> dict[str, dict[str, int]]:
    """What each model's instances saw so far, as the server last wrote it (at most 0.5 s old):
    ``{model: {"executions", "rows", "max_batch_rows", "peak_concurrent_executions",
    "running"}}`` (see :mod:`serving.triton.server`)."""
    try:
        return json.loads((workdir / STATS_FILE).read_text())
    except FileNotFoundError:
        return {}


def _wait_serving(running: RunningServer, service: Service, deadline: float) -> str:
    """Real readiness: ServerReady + ModelReady and ModelMetadata of every model over gRPC.
    Returns the server's self-description ("triton 2.51.0 (pytriton 0.7.0)")."""
    server = ""
    for name in running.models:
        client = TritonClient(running.target, name, timeout_s=5.0)
        try:
            last: Exception | None = None
            while True:
                service.check_alive()
                try:
                    if client.health():
                        client.describe()
                        break
                except Exception as exc:  # noqa: BLE001 - not up yet
                    last = exc
                if time.monotonic() > deadline:
                    raise ServiceError(f"Triton model {name!r} not ready ({last}):\n{service.log_tail()}")
                time.sleep(POLL_S)
            server = client.identify()
        finally:
            client.close()
    return server
