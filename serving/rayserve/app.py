"""The Ray Serve side: the deployment that hosts a model, and the driver process that starts Ray,
Serve and one application per served model. Runs in the ``ray`` environment
(``envs/ray/requirements.txt``); started by :mod:`serving.rayserve.launcher`::

    .envs/ray/bin/python -m serving.rayserve.app --config run.json

See :mod:`serving.rayserve` for the protocols, the knobs and how the pieces fit.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve.config import HTTPOptions, gRPCOptions
from ray.serve.schema import LoggingConfig
from starlette.responses import JSONResponse, Response

from crayfish.host.ports import free_port
from crayfish.tensor import DTYPE_NAMES, TensorError, arrays_from, fill_named, from_tensor, to_tensor
from crayfish.v1 import scoring_pb2
from serving.embedded import create_scorer
from serving.embedded.base import ScoringError
from serving.errors import BadInputError, ModelNotFoundError, grpc_status
from serving.models import resolve_spec
from serving.models.spec import FeedError, check_feeds
from serving.rayserve import wire

log = logging.getLogger("crayfish.rayserve")

GRPC_SERVICER = "crayfish.v1.scoring_pb2_grpc.add_ScoringServicer_to_server"


def server_label() -> str:
    return f"ray-serve {ray.__version__}"


# --------------------------------------------------------------------------------------------
# loopback-only binding inside Ray's own processes
# --------------------------------------------------------------------------------------------
def _bind_loopback() -> None:
    """Worker-process setup hook: make Serve's gRPC servers bind 127.0.0.1 instead of ``[::]``.

    Ray Serve 2.60 hard-codes ``[::]:<port>`` for the gRPC proxy (``gRPCOptions`` has no host)
    and ``[::]:0`` for each replica's inter-deployment gRPC server. Both addresses go through one
    helper each, which this hook (run by Ray in every worker process of the job, before any
    actor code) wraps to rewrite the host part to the loopback address.
    """
    host = os.environ.get("CRAYFISH_RAY_BIND_HOST", "127.0.0.1")

    def loopback(address: str) -> str:
        if address.startswith("[::]:") or address.startswith("0.0.0.0:"):
            return f"{host}:{address.rsplit(':', 1)[1]}"
        return address

    try:
        # inside the try: private Ray modules, which may move in another Ray version
        from ray._common import tls_utils
        from ray.serve._private import default_impl, replica

        orig_add_grpc_address = default_impl.add_grpc_address
        orig_add_port = tls_utils.add_port_to_grpc_server

        def add_grpc_address(server, address):
            return orig_add_grpc_address(server, loopback(address))

        def add_port_to_grpc_server(server, address):
            return orig_add_port(server, loopback(address))

        default_impl.add_grpc_address = add_grpc_address
        tls_utils.add_port_to_grpc_server = add_port_to_grpc_server
        replica.add_port_to_grpc_server = add_port_to_grpc_server
    except Exception as exc:  # noqa: BLE001 - Ray internals moved: say so, keep serving
        print(f"crayfish: could not pin Ray Serve gRPC servers to {host}: {exc!r}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# the deployment
# --------------------------------------------------------------------------------------------
class ModelServer:
    """One replica: one scorer of one model (``create_scorer``), scored one request at a time.

    Serve routes HTTP requests to ``__call__`` and the ``crayfish.v1.Scoring`` gRPC methods to
    the methods of the same name. The scorer runs in a one-thread executor, so the replica's
    event loop stays free (health, metadata, receiving the next request) while at most one
    inference runs -- a replica is one model instance, like one of the paper's mp instances.
    """

    def __init__(self, name: str, model: str, backend: str, options: dict[str, Any],
                 models_dir: str | None, warmup: bool = True):
        self.name = name
        self.spec = resolve_spec(model, models_dir)
        self.backend = backend
        self.scorer = create_scorer(backend, model, models_dir, **options)
        if warmup:
            self.scorer.warmup(batch_size=1)
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"score-{name}")
        self.server = server_label()
        self._description = {
            "model": name,
            "backend": backend,
            "server": self.server,
            "inputs": [{"name": t.name, "dtype": t.dtype, "shape": [-1, *t.shape]} for t in self.spec.inputs],
            "outputs": [{"name": t.name, "dtype": t.dtype, "shape": [-1, *t.shape]} for t in self.spec.outputs],
            "scorer": self.scorer.describe(),
        }

    # -- scoring -------------------------------------------------------------------------------
    def _timed(self, x, queued_at: int) -> tuple[np.ndarray | dict, int, int]:
        t0 = time.perf_counter_ns()
        y = self.scorer.score(x)
        return y, time.perf_counter_ns() - t0, t0 - queued_at

    async def _score(self, x) -> tuple[np.ndarray | dict, int, int]:
        """Score on the replica's scorer thread; Scorer input errors become BadInputError.

        ``x``: an array, or ``{input name: array}`` (the named-tensor contract, as
        serving.core.ScoringCore.score): named in, named out -- the output is then a
        ``{output name: array}`` dict, as it is for a model with several outputs."""
        named = isinstance(x, dict)
        if named:
            try:
                x = check_feeds(self.spec, x)   # an array for a model of one input
            except FeedError as exc:
                raise BadInputError(f"{self.name}: {exc}") from None
        loop = asyncio.get_running_loop()
        try:
            y, inference_ns, queue_ns = await loop.run_in_executor(self._pool, self._timed, x,
                                                                   time.perf_counter_ns())
        except ScoringError as exc:
            raise BadInputError(str(exc)) from None
        if named and not isinstance(y, dict):
            y = {self.spec.output_name: y}
        return y, inference_ns, queue_ns

    def _check_model(self, requested: str) -> None:
        if requested and requested != self.name:
            raise ModelNotFoundError(f"model {requested!r} is not served by application {self.name!r}")

    # -- HTTP ----------------------------------------------------------------------------------
    async def __call__(self, request):
        path = request.url.path
        prefix = wire.route(self.name)
        sub = path[len(prefix):] if path.startswith(prefix) else path
        try:
            if sub == wire.SCORE_PATH and request.method == "POST":
                headers = request.headers
                shape = headers.get(wire.H_SHAPE)
                try:
                    if shape is None and wire.H_TENSORS in headers:     # named tensors
                        x = wire.decode_named(await request.body(), headers[wire.H_TENSORS])
                    else:
                        x = wire.decode(await request.body(), shape, headers.get(wire.H_DTYPE))
                except ValueError as exc:
                    raise BadInputError(f"{self.name}: {exc}") from None
                y, inference_ns, queue_ns = await self._score(x)
                body, headers = wire.encode_named(y) if isinstance(y, dict) else wire.encode(y)
                headers.update({wire.H_INFERENCE_NS: str(inference_ns), wire.H_QUEUE_NS: str(queue_ns),
                                wire.H_SERVER: self.server})
                return Response(body, media_type=wire.CONTENT_TYPE, headers=headers)
            if sub == wire.METADATA_PATH and request.method == "GET":
                return JSONResponse(self._description)
            if sub == wire.HEALTH_PATH and request.method == "GET":
                return JSONResponse({"status": "ok", "model": self.name, "server": self.server})
            raise ModelNotFoundError(f"no {request.method} {path} here; this application serves "
                                     f"POST {prefix}{wire.SCORE_PATH}, GET {prefix}{wire.METADATA_PATH}, "
                                     f"GET {prefix}{wire.HEALTH_PATH}")
        except Exception as exc:  # noqa: BLE001 - every failure is answered, mapped in one place
            code, message = grpc_status(exc)
            return Response(message, status_code=wire.HTTP_FOR_STATUS.get(code.name, 500),
                            media_type="text/plain; charset=utf-8",
                            headers={wire.H_ERROR: code.name, wire.H_SERVER: self.server})

    # -- gRPC: crayfish.v1.Scoring -------------------------------------------------------------
    def _response(self, request, y: np.ndarray | dict, inference_ns: int, queue_ns: int):
        resp = scoring_pb2.ScoreResponse(model=self.name, request_id=request.request_id,
                                         inference_ns=inference_ns, queue_ns=queue_ns,
                                         server=self.server, backend=self.backend)
        if isinstance(y, dict):         # several outputs, or a named request: ScoreResponse.outputs
            fill_named(resp.outputs, y)
        else:
            to_tensor(y, resp.output)
        return resp

    async def _score_request(self, request):
        self._check_model(request.model)
        try:
            x = arrays_from(request.inputs) if request.inputs else from_tensor(request.input)
        except TensorError as exc:
            raise BadInputError(f"{self.name}: {exc}") from None
        return self._response(request, *(await self._score(x)))

    @staticmethod
    def _fail(grpc_context, exc: BaseException, request_id: str | None = None) -> None:
        code, message = grpc_status(exc)
        grpc_context.set_code(code)
        grpc_context.set_details(f"request_id={request_id}: {message}" if request_id is not None else message)

    async def Score(self, request, grpc_context):
        try:
            return await self._score_request(request)
        except Exception as exc:  # noqa: BLE001 - mapped by serving.errors
            self._fail(grpc_context, exc)
            return scoring_pb2.ScoreResponse()

    async def ScoreStream(self, requests, grpc_context):
        """Bidi stream: requests scored in arrival order, one at a time (the replica's scorer),
        each answer sent as soon as it is ready; the first failure ends the stream with its
        status, ``request_id=<id>:`` leading the message (as the crayfish-scoring server)."""
        async for request in requests:
            try:
                resp = await self._score_request(request)
            except Exception as exc:  # noqa: BLE001 - mapped by serving.errors
                self._fail(grpc_context, exc, request.request_id)
                # On a stream, Serve carries the status set on the context to the client only
                # when the generator raises (it then logs the failure once in the proxy's log).
                raise
            yield resp

    async def DescribeModel(self, request, grpc_context):
        try:
            self._check_model(request.model)
        except Exception as exc:  # noqa: BLE001 - mapped by serving.errors
            self._fail(grpc_context, exc)
            return scoring_pb2.ModelDescription()
        d = self._description

        def specs(items):
            return [scoring_pb2.TensorSpec(name=t["name"], dtype=DTYPE_NAMES[t["dtype"]], shape=t["shape"])
                    for t in items]

        return scoring_pb2.ModelDescription(model=d["model"], backend=d["backend"],
                                            inputs=specs(d["inputs"]), outputs=specs(d["outputs"]))

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        scorer = getattr(self, "scorer", None)
        if scorer is not None:
            scorer.close()


# --------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------


def run(cfg: dict[str, Any]) -> None:
    """Start Ray + Serve + one application per entry of ``cfg["models"]``; write the ready file;
    serve until SIGTERM/SIGINT; shut Serve and Ray down. ``cfg`` is what the launcher writes
    (see :func:`serving.rayserve.launcher.start`)."""
    host = cfg.get("host", "127.0.0.1")
    stop = threading.Event()

    http_port = int(cfg.get("http_port") or 0) or free_port(host)
    grpc_port = int(cfg.get("grpc_port") or 0) or free_port(host)
    os.environ["CRAYFISH_RAY_BIND_HOST"] = host
    t0 = time.monotonic()
    ray.init(
        address="local",
        num_cpus=int(cfg["num_cpus"]),
        num_gpus=0,
        include_dashboard=False,
        _node_ip_address=host,
        _temp_dir=cfg["temp_dir"],
        object_store_memory=int(cfg["object_store_mb"]) * 1024 * 1024,
        runtime_env={"worker_process_setup_hook": "serving.rayserve.app._bind_loopback"},
        logging_level=logging.WARNING,
        log_to_driver=bool(cfg.get("log_to_driver", True)),
        configure_logging=True,
    )
    t_ray = time.monotonic() - t0
    # after ray.init: it installs a C++ handler that dumps a stack and dies on SIGTERM
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # system actors (controller, proxies) and every application: quiet, and no per-request
    # access log line (it costs the replica and the proxy time on every call) unless asked for
    logging_config = LoggingConfig(log_level=cfg.get("serve_log_level", "WARNING"),
                                   enable_access_log=bool(cfg.get("access_log", False)))
    try:
        serve.start(
            http_options=HTTPOptions(host=host, port=http_port,
                                     request_timeout_s=cfg.get("request_timeout_s"),
                                     keep_alive_timeout_s=int(cfg.get("keep_alive_timeout_s", 60))),
            grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=[GRPC_SERVICER],
                                     request_timeout_s=cfg.get("request_timeout_s")),
            logging_config=logging_config,
        )
        targets = []
        for name, m in cfg["models"].items():
            dep = serve.deployment(
                ModelServer,
                name=f"model-{name}",
                num_replicas=int(m["instances"]),
                max_ongoing_requests=int(m["max_ongoing_requests"]),
                ray_actor_options={"num_cpus": float(m["replica_cpus"])},
            )
            app = dep.bind(name, m["model"], m["backend"], m.get("options", {}), cfg.get("models_dir"),
                           m.get("warmup", True))
            targets.append(serve.RunTarget(app, name=name, route_prefix=wire.route(name),
                                           logging_config=logging_config))
        serve.run_many(targets)
        ready = {
            "http": f"{host}:{http_port}",
            "grpc": f"{host}:{grpc_port}",
            "server": server_label(),
            "ray_version": ray.__version__,
            "models": list(cfg["models"]),
            "pid": os.getpid(),
            "ray_init_s": round(t_ray, 2),
            "serve_start_s": round(time.monotonic() - t0 - t_ray, 2),
        }
        tmp = Path(cfg["ready_file"]).with_suffix(".tmp")
        tmp.write_text(json.dumps(ready))
        tmp.replace(cfg["ready_file"])
        print(f"crayfish ray-serve ready: {json.dumps(ready)}", flush=True)
        stop.wait()
        t_stop = time.monotonic()
        print("crayfish ray-serve: shutting down", flush=True)
        try:
            serve.shutdown()
        except Exception as exc:  # noqa: BLE001 - ray.shutdown below still tears everything down
            print(f"serve.shutdown failed: {exc!r}", flush=True)
        print(f"crayfish ray-serve: serve.shutdown took {time.monotonic() - t_stop:.1f}s", flush=True)
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Ray Serve host of crayfish models (see serving.rayserve)")
    p.add_argument("--config", required=True, help="JSON file written by serving.rayserve.launcher")
    args = p.parse_args(argv)
    run(json.loads(Path(args.config).read_text()))
    return 0


if __name__ == "__main__":
    # run the imported module, not __main__: Serve must pickle ModelServer by reference
    # (serving.rayserve.app.ModelServer), which every replica imports from this repo
    from serving.rayserve import app as _app

    sys.exit(_app.main())
