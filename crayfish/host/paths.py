"""Where things live on this machine. Every path a service derives comes from here, so one
environment variable moves all of it:

* ``CRAYFISH_CACHE_DIR`` — every cache (default ``<checkout>/.cache``): the Kafka jars and broker
  state, the built models, Jaeger, the Flink and Spark connector jars, the Kafka Streams build,
  TorchServe's stubs and archives, the logs of started servers, the native stack;
* ``CRAYFISH_MODELS_DIR`` — the built models (default ``<cache>/models``);
* ``CRAYFISH_ENVS_DIR`` — the per-deployable environments (default ``<checkout>/.envs``).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def cache_dir(*parts: str) -> Path:
    """``<cache>/<parts…>``; the folder is not created."""
    return _from_env("CRAYFISH_CACHE_DIR", REPO_ROOT / ".cache").joinpath(*parts)


def models_dir() -> Path:
    return _from_env("CRAYFISH_MODELS_DIR", cache_dir("models"))


def envs_dir() -> Path:
    return _from_env("CRAYFISH_ENVS_DIR", REPO_ROOT / ".envs")
