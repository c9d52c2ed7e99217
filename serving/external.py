"""External model servers the mesh can start and call: one registry.

Each entry names the package whose ``launcher.start(...)`` starts the real server (in its own
environment) and returns a ``RunningServer(target, server, kind, stop)``, the client kind the
workers use (serving.clients), and the environment the worker must run in to have that client.

Adding a server: write ``serving/<pkg>/launcher.py`` (see serving/triton/launcher.py for the
shape), a client in serving/clients/, pass tests/conformance_serving.py, then add one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSpec:
    name: str              # serving.server in experiment files
    launcher: str          # module with start(model, instances, models_dir, log_dir, **options)
    client: str            # client kind in serving.clients
    worker_env: str = "core"  # environment whose packages include the client


SERVERS: dict[str, ServerSpec] = {
    "scoring": ServerSpec("scoring", "serving.scoring.launcher", "scoring"),
    "tf-serving": ServerSpec("tf-serving", "serving.tfserving.launcher", "tf-serving", worker_env="tensorflow"),
    "triton": ServerSpec("triton", "serving.triton.launcher", "triton"),
    "torchserve": ServerSpec("torchserve", "serving.torchserve.launcher", "torchserve"),
    "ray-serve": ServerSpec("ray-serve", "serving.rayserve.launcher", "ray-serve"),
    "ray-serve-grpc": ServerSpec("ray-serve-grpc", "serving.rayserve.launcher", "ray-serve-grpc"),
}


def server_spec(name: str) -> ServerSpec:
    try:
        return SERVERS[name]
    except KeyError:
        raise ValueError(f"unknown external server {name!r}; known: {', '.join(SERVERS)}") from None


def available(name: str) -> bool:
    """Whether this checkout has the server's launcher (some arrive later than others)."""
    try:
        importlib.import_module(server_spec(name).launcher)
        return True
    except ModuleNotFoundError:
        return False


def start_server(name: str, **kwargs):
    return importlib.import_module(server_spec(name).launcher).start(**kwargs)
