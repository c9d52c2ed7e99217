"""Start the TF Serving protocol server (``python -m serving.tfserving``, in the ``tensorflow``
environment) and wait until it serves; see :mod:`serving.tfserving` for every knob.

Runs in any environment (the core env of the runner and the tests): it imports neither
TensorFlow nor the TF Serving stubs. Readiness is real: the server writes its ready file (the
bound port) only after every scorer instance is loaded and warmed up, and then this module also
asks the server's gRPC health service for ``tensorflow.serving.PredictionService`` = SERVING.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crayfish.host.envs import python_for
from crayfish.host.paths import REPO_ROOT, cache_dir
from crayfish.host.procs import Service, ServiceError, wait_file
from serving.models import MODELS, known_model, model_paths
from serving.models.export_tf import DEFAULT_INPUT_KEY, _is_current
from serving.server import RunningServer
from serving.tfserving import SERVER_NAME

ENV_NAME = "tensorflow"
KIND = "tf-serving"
HUNG_MODELS = {"ffnn-hung": {"model": "ffnn", "backend": "sleep", "options": {"delay_ms": 5000}}}
POLL_S = 0.05


def _export_if_needed(model: str, models_dir: Path | None, python: str, log_dir: Path,
                      timeout_s: float) -> None:
    if _is_current(model, models_dir, DEFAULT_INPUT_KEY):
        return
    args = [python, "-m", "serving.models.export_tf", "--model", model]
    if models_dir is not None:
        args += ["--dir", str(models_dir)]
    log = log_dir / f"export-{model}.log"
    with open(log, "wb") as out:
        rc = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=timeout_s).returncode
    if rc != 0:
        raise ServiceError(f"SavedModel export of {model!r} failed (rc {rc}):\n{log.read_text()[-3000:]}")


def _health_serving(target: str, timeout_s: float = 2.0) -> bool:
    with grpc.insecure_channel(target) as ch:
        try:
            r = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService"),
                timeout=timeout_s)
        except grpc.RpcError:
            return False
    return r.status == health_pb2.HealthCheckResponse.SERVING


def start(model: str = "ffnn", instances: int = 1, models_dir: Path | None = None,
          log_dir: Path | None = None, extra_models: dict | None = None, *,
          backend: str = "savedmodel", backend_options: dict | None = None,
          batching: dict | None = None, export: bool = True, timeout_s: float = 300.0,
          **settings: Any) -> RunningServer:
    """Start the server for ``model`` with ``instances`` scorer instances (mp) plus
    ``extra_models`` (e.g. :data:`HUNG_MODELS`); other keywords are ScoringSettings fields.

    :meth:`RunningServer.stop`: SIGTERM (graceful: health NOT_SERVING, in-flight calls get
    shutdown_grace_s), then SIGKILL after 30 s; the server is one process, in its own session."""
    if not known_model(model, models_dir):
        raise ValueError(f"tf-serving launcher: unknown model {model!r}; known: {', '.join(sorted(MODELS))}, "
                         f"or a model file imported into models_dir")
    file_format = None if model in MODELS else model_paths(model, models_dir).manifest["source"]["format"]
    if backend == "savedmodel" and file_format not in (None, "savedmodel"):
        raise ValueError(f"tf-serving launcher: model {model!r} is a model file ({file_format}): the savedmodel "
                         f"backend serves SavedModel files and exports built-in models; serve it with backend "
                         f"'onnxruntime'")
    log_dir = Path(log_dir or cache_dir("tfserving", "logs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    python = python_for(ENV_NAME)
    if backend == "savedmodel" and export and file_format is None:   # a SavedModel file is served as it is
        _export_if_needed(model, models_dir, python, log_dir, timeout_s)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.time_ns() % 10**6}"
    ready = log_dir / f"tfserving-{stamp}.port"
    scoring = {"models": [model], "instances": instances, "backend": backend,
               "backend_options": backend_options or {}, "batching": batching,
               "models_dir": str(models_dir) if models_dir is not None else None,
               "ready_file": str(ready), "service_name": "tf-serving", **settings}
    if backend == "sleep":
        scoring.setdefault("warmup", False)
    config = {"scoring": scoring, "extra_models": dict(extra_models or {})}
    cfg_path = log_dir / f"tfserving-{stamp}.json"
    cfg_path.write_text(json.dumps(config, indent=2))
    log_path = log_dir / f"tfserving-{stamp}.log"
    svc = Service("tf-serving", ["-m", "serving.tfserving", "--config", f"@{cfg_path}"], log_path,
                  python=python, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        deadline = time.monotonic() + timeout_s
        wait_file(ready, [svc], timeout_s, what="tf-serving server")
        port = int(ready.read_text().strip())
        host = scoring.get("host", "127.0.0.1")
        target = f"{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        while not scoring.get("tls") and not _health_serving(target):  # TLS: the ready file suffices
            svc.check_alive()
            if time.monotonic() > deadline:
                raise ServiceError(f"tf-serving server at {target} not SERVING after {timeout_s:.0f}s:\n"
                                   f"{svc.log_tail()}")
            time.sleep(POLL_S)
    except BaseException:
        svc.stop()
        raise
    return RunningServer(server=SERVER_NAME, targets={KIND: target}, service=svc, log_path=log_path,
                         models=[model, *(extra_models or {})],
                         info={"backend": backend, "instances": instances, "config": str(cfg_path)})
