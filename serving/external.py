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


# Embedded backends whose library lives in an environment of its own: a worker (or our Scoring
# server) using them runs with that environment's interpreter.
BACKEND_ENVS: dict[str, str] = {"torchscript": "torch", "savedmodel": "tensorflow"}


# How each of those backends gets its model files from the canonical seeded .npz.
BACKEND_EXPORTERS: dict[str, str] = {"torchscript": "serving.models.export_torch",
                                     "savedmodel": "serving.models.export_tf"}


def backend_env(backend: str) -> str:
    return BACKEND_ENVS.get(backend, "core")


def export_for_backend(backend: str, model: str, models_dir, seed: int = 42, log=print) -> None:
    """Write the backend's model format (TorchScript, SavedModel) next to the ONNX model, running
    the exporter in the backend's environment (cached: a current export is kept)."""
    import subprocess

    module = BACKEND_EXPORTERS.get(backend)
    if module is None:
        return
    from crayfish.host.envs import python_for

    log(f"model {model}: {backend} export (in the {backend_env(backend)} environment)")
    subprocess.run([python_for(backend_env(backend), log=log), "-m", module, "--model", model,
                    "--dir", str(models_dir), "--seed", str(seed)], check=True)


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
