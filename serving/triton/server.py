"""The Triton process: PyTriton binds one Python inference callable per model instance into the
Triton Inference Server that the ``nvidia-pytriton`` wheel bundles, and serves them over KServe v2
gRPC. Run by :mod:`serving.triton.launcher` with the ``triton`` environment's interpreter::

    .envs/triton/bin/python -m serving.triton.server --config CONFIG.json

Every model instance runs one embedded scorer (:func:`serving.embedded.create_scorer`, the code
the workers run); of the repository it imports only that, :mod:`serving.models.spec` and
:mod:`crayfish.host.ports`, which need nothing beyond numpy and onnxruntime, so the ``triton``
environment stays small (no onnx, pydantic, grpc stubs). The launcher checks every model's
backend, options and files in the core environment first and writes the served models into
CONFIG.json (see :mod:`serving.triton` for every key).

Lifecycle: read the config -> make the bundled Triton's Python-backend stub load *this*
interpreter's libpython (``LD_LIBRARY_PATH``, see :func:`_use_own_libpython`) -> pick free
loopback ports -> ``Triton(config=...).bind(...)`` every model with ``instances`` callables ->
``triton.run()`` (returns when Triton is up and every model is loaded) -> write the ready file
(ports, versions) -> serve until SIGTERM/SIGINT -> ``triton.stop()`` (stops tritonserver, its
stubs, removes PyTriton's workspace and shared memory) -> exit 0.

While serving, ``stats_file`` (if configured) is rewritten (atomically, at most every 0.5 s, when
something changed) with what each model's instances saw: ``{model: {"executions", "rows",
"max_batch_rows", "peak_concurrent_executions", "running"}}`` -- executions are the instance
calls after Triton's dynamic batching, so ``max_batch_rows`` shows requests Triton concatenated
and ``peak_concurrent_executions`` how many instances of the model really ran at once (Triton's
own statistics endpoint is token-protected by PyTriton and has no concurrency figure).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import sysconfig
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.models import model as pytriton_model
from pytriton.triton import Triton, TritonConfig

from crayfish.host.ports import free_port
from serving.embedded import Scorer, create_scorer
from serving.models.build import resolve_spec
from serving.models.spec import ModelSpec, TensorSpec

LOG = logging.getLogger("serving.triton.server")


def _use_own_libpython() -> None:
    """Put this interpreter's own ``libpython`` first on ``LD_LIBRARY_PATH``.

    Triton's Python backend runs a stub executable per model instance that links
    ``libpython3.X.so`` dynamically. Without this, the loader finds the distribution's libpython
    (e.g. Debian's 3.11.2 in /usr/lib) while the stub imports the *venv's* standard library and
    extension modules, and the stub dies at start (``'_thread.RLock' object has no attribute
    '_recursion_count'``). tritonserver inherits this process's environment, so setting it here,
    before Triton starts, is enough.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return
    current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir not in current:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *current])




_HANDSHAKE_NEEDLE = b"def get_config_from_handshake_server(socket_path: pathlib.Path, timeout_s: float = 1.0)"


def _widen_instance_handshake(timeout_s: float) -> None:
    """Give a model's 2nd..nth instances ``timeout_s`` (not 1 s) to find the 1st one's handshake
    socket.

    PyTriton's proxy (its ``model.py`` / ``communication.py``, shipped to Triton with every model
    load) has the model's first instance start a tensor store (a spawned process) and then a
    handshake socket; the other instances, loaded in parallel by Triton's Python backend, wait for
    that socket only 1 s. On a small, busy machine the first instance is often slower than that
    and the model fails to load (``Timeout occurred while waiting for config file
    .../<model>-config.sock``). The files PyTriton ships come from ``Model.get_proxy_model_files``;
    this widens the default in the shipped ``communication.py`` only (the installed package is
    untouched). Checked against nvidia-pytriton 0.7.0; logs a warning if the code differs.
    """
    original = pytriton_model.Model.get_proxy_model_files
    if getattr(original, "_crayfish_widened", False):
        return
    replacement = _HANDSHAKE_NEEDLE.replace(b"1.0)", repr(float(timeout_s)).encode() + b")")

    def get_proxy_model_files(self):
        files = original(self)
        for key, content in files.items():
            if key.endswith("/communication.py"):
                if _HANDSHAKE_NEEDLE in content:
                    files[key] = content.replace(_HANDSHAKE_NEEDLE, replacement)
                else:
                    LOG.warning("pytriton's communication.py changed: instance handshake timeout not widened")
        return files

    get_proxy_model_files._crayfish_widened = True
    pytriton_model.Model.get_proxy_model_files = get_proxy_model_files


# ---------------------------------------------------------------------------------------------
# What one model instance runs: one embedded scorer (serving.embedded), never shared
# ---------------------------------------------------------------------------------------------

def _make_scorer(spec: dict[str, Any], models_dir: str | None) -> Scorer:
    """The instance's scorer: the backend, model and options of ``spec``; one that loads a model
    is warmed up once (one zero row), so the first request does not pay for lazy initialisation."""
    scorer = create_scorer(spec.get("backend", "onnxruntime"), spec["model"], models_dir,
                           **(spec.get("options") or {}))
    if scorer.needs_artifacts:
        scorer.warmup(batch_size=1, iterations=1)
    return scorer


class _ModelStats:
    """What the instances of one model saw (shared by them; see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._d = {"executions": 0, "rows": 0, "max_batch_rows": 0, "peak_concurrent_executions": 0}

    def begin(self, rows: int) -> None:
        with self._lock:
            self._running += 1
            d = self._d
            d["executions"] += 1
            d["rows"] += rows
            d["max_batch_rows"] = max(d["max_batch_rows"], rows)
            d["peak_concurrent_executions"] = max(d["peak_concurrent_executions"], self._running)

    def end(self) -> None:
        with self._lock:
            self._running -= 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {**self._d, "running": self._running}


def _write_json(path: str, data: Any) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _infer_callable(scorer: Scorer, model: ModelSpec, stats: _ModelStats | None = None):
    """The PyTriton inference callable of one instance. ``@batch`` concatenates the requests
    Triton hands over at once (more than one only with dynamic batching) and splits the output
    back per request.

    A model with one float32 input and one output gets the single-tensor callable (the hot path,
    as before); any other the named one: every input of the spec by name in its own dtype (a dict
    for several, serving.models.spec), every output back by name."""
    stats = stats or _ModelStats()
    if not model.named and model.input_dtype == "float32" and model.outputs[0].dtype == "float32":
        input_name, output_name = model.input_name, model.output_name

        @batch
        def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
            x = inputs[input_name]
            if x.dtype != np.float32:       # Triton already checked FP32; keep the scorer's contract
                x = x.astype(np.float32)
            stats.begin(x.shape[0])
            try:
                y = scorer.score(x)
            finally:
                stats.end()
            return {output_name: np.ascontiguousarray(y, dtype=np.float32)}

        return infer

    ins = [(t.name, np.dtype(t.dtype)) for t in model.inputs]
    outs = [(t.name, np.dtype(t.dtype)) for t in model.outputs]
    first = ins[0][0]

    @batch
    def infer_named(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        # Triton checked every input's datatype against the bound one: the casts are no-ops
        feeds = {name: inputs[name] if inputs[name].dtype == dt else inputs[name].astype(dt)
                 for name, dt in ins}
        stats.begin(feeds[first].shape[0])
        try:
            y = scorer.score(feeds if len(ins) > 1 else feeds[first])
        finally:
            stats.end()
        if not isinstance(y, dict):
            y = {outs[0][0]: y}
        return {name: np.ascontiguousarray(y[name], dtype=dt) for name, dt in outs}

    return infer_named


# -- tensors of no item axis ([batch] only): Triton's dims [1] + reshape [] ---------------------
# Triton wants non-empty dims for every tensor of a batching model; a tensor of shape [batch]
# (e.g. a label per item) is bound as dims [1] with ``reshape: {shape: []}``, Triton's own way:
# the model takes / produces [b], the inference API carries [b, 1] (clients read the reshape from
# the model config: serving.triton.client). PyTriton 0.7.0 has no reshape field, so the config it
# generates gets it added here, for the tensors listed per served model name.
_RESHAPED: dict[str, set[str]] = {}
_GENERATOR_PATCHED = False


def _tensor(t: TensorSpec, model_name: str) -> Tensor:
    if not t.shape:
        _RESHAPED.setdefault(model_name, set()).add(t.name)
        _patch_config_generator()
        return Tensor(name=t.name, dtype=np.dtype(t.dtype), shape=(1,))
    return Tensor(name=t.name, dtype=np.dtype(t.dtype), shape=tuple(t.shape))


def _patch_config_generator() -> None:
    global _GENERATOR_PATCHED
    if _GENERATOR_PATCHED:
        return
    from pytriton.model_config.generator import ModelConfigGenerator

    original = ModelConfigGenerator.get_config

    def get_config(self):
        config = original(self)
        names = _RESHAPED.get(config.get("name"), ())
        for item in [*config.get("input", ()), *config.get("output", ())]:
            if item["name"] in names:
                item["dims"] = [1]
                item["reshape"] = {"shape": []}
        return config

    ModelConfigGenerator.get_config = get_config
    _GENERATOR_PATCHED = True


# ---------------------------------------------------------------------------------------------

def _triton_config(cfg: dict[str, Any], pytriton_version: str) -> tuple[TritonConfig, dict[str, Any]]:
    """Triton's configuration from ours (free loopback ports where none is given) and the
    listeners it gets: ``{"host", "grpc_port", "http_port", "metrics_port"}`` (None: off)."""
    host = cfg.get("host", "127.0.0.1")
    http = bool(cfg.get("http", False))
    metrics = bool(cfg.get("metrics", False))
    ports = {"host": host,
             "grpc_port": int(cfg.get("grpc_port") or 0) or free_port(host),
             "http_port": (int(cfg.get("http_port") or 0) or free_port(host)) if http else None,
             "metrics_port": (int(cfg.get("metrics_port") or 0) or free_port(host)) if metrics else None}
    triton_cfg = TritonConfig(
        # Triton's --id: what ServerMetadata answers as the server's name (no spaces: it is
        # passed on tritonserver's command line)
        id=cfg.get("server_id") or f"pytriton-{pytriton_version}",
        grpc_address=host, grpc_port=ports["grpc_port"],
        allow_http=http, http_address=host if http else None, http_port=ports["http_port"],
        allow_metrics=metrics, allow_cpu_metrics=metrics, allow_gpu_metrics=False,
        metrics_address=host if metrics else None, metrics_port=ports["metrics_port"],
        allow_sagemaker=False, allow_vertex_ai=False,
        log_verbose=int(cfg.get("log_verbose", 0)),
        exit_timeout_secs=int(cfg.get("exit_timeout_s", 5)),
        grpc_infer_allocation_pool_size=cfg.get("grpc_infer_allocation_pool_size"),
    )
    return triton_cfg, ports


def _bind(triton: Triton, name: str, spec: dict[str, Any], models_dir: str | None, stats: _ModelStats) -> None:
    """Bind served model ``name``: ``instances`` callables, each with a scorer of its own, and
    Triton's dynamic batcher when ``spec`` asks for it."""
    model = resolve_spec(spec["model"], models_dir)
    instances = int(spec.get("instances", 1))
    callables = [_infer_callable(_make_scorer(spec, models_dir), model, stats) for _ in range(instances)]
    db = spec.get("dynamic_batching")
    batcher = (DynamicBatcher(max_queue_delay_microseconds=int(db.get("max_queue_delay_us", 0)),
                              preferred_batch_size=db.get("preferred_batch_size"))
               if db is not None else None)
    triton.bind(
        model_name=name,
        infer_func=callables if instances > 1 else callables[0],
        # every input and output of the model's spec, by name, in its own dtype
        inputs=[_tensor(t, name) for t in model.inputs],
        outputs=[_tensor(t, name) for t in model.outputs],
        config=ModelConfig(batching=True, max_batch_size=int(spec.get("max_batch_size", 1024)),
                           batcher=batcher),
        strict=False,
    )
    LOG.info("bound %s: backend=%s instances=%d dynamic_batching=%s", name,
             spec.get("backend", "onnxruntime"), instances, db)


def serve(cfg: dict[str, Any]) -> int:
    _use_own_libpython()
    _widen_instance_handshake(float(cfg.get("instance_handshake_timeout_s", 60.0)))
    pytriton_version = metadata.version("nvidia-pytriton")
    triton_cfg, ports = _triton_config(cfg, pytriton_version)

    models: dict[str, dict[str, Any]] = cfg["models"]
    models_dir = cfg.get("models_dir")
    stats = {name: _ModelStats() for name in models}
    stats_file = cfg.get("stats_file")
    t0 = time.monotonic()
    triton = Triton(config=triton_cfg, workspace=cfg.get("workspace"))
    stop = threading.Event()
    serving = False

    def on_signal(signum, _frame):
        LOG.info("signal %s: stopping", signum)
        stop.set()
        if not serving:     # still inside triton.run(): abort the start-up (finally: stop)
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for name, spec in models.items():
            _bind(triton, name, spec, models_dir, stats[name])
        triton.run()     # starts tritonserver, loads every model, waits until they are ready
        info = {
            "pid": os.getpid(),
            **ports,
            "pytriton_version": pytriton_version,
            "models": list(models),
            "startup_s": round(time.monotonic() - t0, 3),
        }
        last_stats = None

        def write_stats() -> None:
            nonlocal last_stats
            snap = {name: st.snapshot() for name, st in stats.items()}
            if stats_file and snap != last_stats:
                _write_json(stats_file, snap)
                last_stats = snap

        write_stats()
        ready = cfg.get("ready_file")
        if ready:
            _write_json(ready, info)
        serving = True
        LOG.info("serving on %s:%d (gRPC) after %.1fs", ports["host"], ports["grpc_port"], info["startup_s"])
        while not stop.wait(0.5):
            if not triton.is_alive():
                LOG.error("tritonserver or a model proxy died")
                return 1
            write_stats()
        return 0
    finally:
        try:
            triton.stop()
        except Exception:  # noqa: BLE001 - shutting down anyway
            LOG.exception("triton.stop() failed")
        LOG.info("stopped")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path, help="JSON written by serving.triton.launcher")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # PyTriton is chatty at INFO (every config, every client it makes): warnings and errors only
    logging.getLogger("pytriton").setLevel(logging.WARNING)
    return serve(json.loads(args.config.read_text()))


if __name__ == "__main__":
    sys.exit(main())
