"""Per-deployable Python environments, built on demand and cached.

The user's packages cannot share one virtualenv (PyFlink pins apache-beam/pandas/pyarrow, Ray,
TensorFlow, Triton and TorchServe bring their own pins). Like container images, every heavy
engine or server gets its own environment:

- ``core``: the repository's ``.venv`` (generator, collector, runner, baseline worker, embedded
  ONNX, our Scoring server), made by ``make setup``.
- ``<name>``: ``.envs/<name>/``, a virtualenv with ``envs/<name>/requirements.txt`` installed,
  plus this repository installed editable without dependencies (so our code runs there with that
  environment's packages). Rebuilt when the requirements file changes.

Adding an environment: create ``envs/<name>/requirements.txt`` (pin what matters; include what our
code imports there: protobuf>=6.31.1 for the committed stubs, grpcio, numpy, pydantic, ...), then
``crayfish env build <name>`` (or ``make env-<name>``). Code that starts a service in it asks
:func:`python_for` for the interpreter.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from crayfish.host.paths import REPO_ROOT, envs_dir

ENVS_SPEC = REPO_ROOT / "envs"
BOOT_PYTHON = os.environ.get("CRAYFISH_BOOT_PYTHON", "python3.11")


class EnvironmentError_(RuntimeError):
    pass


def available() -> list[str]:
    return ["core"] + sorted(p.parent.name for p in ENVS_SPEC.glob("*/requirements.txt"))


# Bump to rebuild every environment (e.g. when the build steps below change).
BUILD_RECIPE = "1"


def _fingerprint(name: str) -> str:
    """Requirements + recipe. Not pyproject.toml: this repo is installed editable without its
    dependencies, so its own changes need no rebuild (and a rebuild must not pull an environment
    from under a running server)."""
    h = hashlib.sha256(BUILD_RECIPE.encode())
    h.update((ENVS_SPEC / name / "requirements.txt").read_bytes())
    return h.hexdigest()


def env_dir(name: str) -> Path:
    return envs_dir() / name


def is_built(name: str) -> bool:
    if name == "core":
        return True
    stamp = env_dir(name) / ".crayfish-built"
    return stamp.exists() and stamp.read_text().strip() == _fingerprint(name)


def python_for(name: str, build: bool = True, log=print) -> str:
    """The interpreter of environment ``name``, building it first when needed."""
    if name == "core":
        return sys.executable
    if not (ENVS_SPEC / name / "requirements.txt").exists():
        raise EnvironmentError_(f"unknown environment {name!r}; known: {', '.join(available())}")
    if not is_built(name):
        if not build:
            raise EnvironmentError_(f"environment {name!r} is not built: run `crayfish env build {name}`")
        build_env(name, log=log)
    return str(env_dir(name) / "bin" / "python")


def build_env(name: str, force: bool = False, log=print) -> Path:
    """Create .envs/<name> from envs/<name>/requirements.txt (serialized by a file lock)."""
    envs_dir().mkdir(parents=True, exist_ok=True)
    with open(envs_dir() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(name) and not force:
            return env_dir(name)
        target = env_dir(name)
        if target.exists():
            shutil.rmtree(target)
        _check_free_space(name)
        boot = shutil.which(BOOT_PYTHON) or sys.executable
        log(f"building environment {name!r} in {target} (once; cached afterwards) ...")
        subprocess.run([boot, "-m", "venv", str(target)], check=True)
        py = str(target / "bin" / "python")
        # Big wheels (TensorFlow 572 MB, torch's CUDA libraries) over a flaky link: pip retries and
        # resumes a broken download; a failed install is tried again from the partial cache.
        pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--retries", "10",
               "--timeout", "60"]
        _pip(name, pip + ["--upgrade", "pip"], log)
        pip.append("--resume-retries=20")  # an option of the upgraded pip (>= 25.1)
        _pip(name, pip + ["-r", str(ENVS_SPEC / name / "requirements.txt")], log, attempts=PIP_ATTEMPTS)
        _pip(name, pip + ["--no-deps", "-e", str(REPO_ROOT)], log)
        (target / ".crayfish-built").write_text(_fingerprint(name) + "\n")
        log(f"environment {name!r} ready")
        return target


PIP_ATTEMPTS = 3
PIP_RETRY_PAUSE_S = 20.0
# An environment is 0.3-4 GB; a full disk shows up as an obscure pip error half-way through.
MIN_FREE_BYTES = 6 * 1024**3


def _check_free_space(name: str) -> None:
    free = shutil.disk_usage(envs_dir()).free
    if free < MIN_FREE_BYTES:
        raise EnvironmentError_(
            f"environment {name!r}: only {free / 1024**3:.1f} GiB free under {envs_dir()}; "
            f"building needs about {MIN_FREE_BYTES / 1024**3:.0f} GiB")


def _pip(name: str, command: list[str], log, attempts: int = 1) -> None:
    """Run one pip step; show pip's own words when it fails and end in one line, not a traceback."""
    for attempt in range(1, attempts + 1):
        done = subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode == 0:
            return
        said = [line for line in done.stderr.strip().splitlines() if line.strip()]
        for line in said[-15:]:
            log(f"  pip: {line}")
        reason = said[-1].strip() if said else f"exit status {done.returncode}"
        if attempt == attempts:
            raise EnvironmentError_(
                f"environment {name!r}: pip install failed: {reason}")
        log(f"environment {name!r}: pip failed (attempt {attempt}/{attempts}), "
            f"trying again in {PIP_RETRY_PAUSE_S * attempt:.0f}s ...")
        time.sleep(PIP_RETRY_PAUSE_S * attempt)
