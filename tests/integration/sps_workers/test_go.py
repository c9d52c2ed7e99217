"""Go engine (native) beyond the shared conformance suite: its build cache, its Go unit tests,
config errors named in one line, byte-for-byte agreement with the Python scoring operator, the
named-tensor contract, external-serving failures dead-lettered after retries, and a clean SIGTERM
stop with offsets committed and no listening socket.

Needs Go >= 1.26 and a C compiler (cgo): without them every test here fails saying what to install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sps_workers import ENGINES
from sps_workers.go import build
from sps_workers.settings import ExternalSettings, WorkerSettings
from tests.support.native_workers import (
    WorkerStarter,
    check_dead_letters_match_the_python_operator,
    check_every_dtype_goes_through_onnx_runtime_by_name,
    check_missing_model_files_are_config_errors,
    check_named_batches_match_the_python_operator,
    check_sigterm_stops_cleanly,
    check_unreachable_scoring_server_is_dead_lettered,
    offline_settings,
)

SPEC = ENGINES["go"]


@pytest.fixture(scope="module", autouse=True)
def go_toolchain():
    """Every test of this file builds or runs the Go worker: no Go or no C compiler is a failure
    that names what to install, never a skip."""
    missing = [tool for tool in ("go", "gcc") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"go tests: {' and '.join(missing)} not found on PATH; install Go >= 1.26 (https://go.dev/dl) "
                    f"and gcc (cgo)", pytrace=False)


def _launcher(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "sps_workers.go", *args], capture_output=True, text=True,
                          cwd=build.REPO_ROOT, timeout=timeout, check=False)


# -- build ---------------------------------------------------------------------------------------

def _files_of(build_dir):
    return sorted((str(p.relative_to(build_dir)), p.stat().st_ino, p.stat().st_mtime_ns)
                  for p in [build_dir, *build_dir.rglob("*")])


def test_build_is_cached_and_keyed_by_its_sources(tmp_path, monkeypatch):
    binary = build.ensure_built()
    assert binary.is_file() and os.access(binary, os.X_OK) and build.is_built()
    assert binary.parent.name == build.source_hash()
    before = _files_of(binary.parent)
    # A current build must not run Go again: with no go on PATH, build.go() raises BuildError, so
    # getting the binary back proves the toolchain was not invoked, and nothing was rewritten.
    with monkeypatch.context() as m:
        m.setenv("PATH", os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                                         if d and not (Path(d) / "go").exists()))
        assert shutil.which("go") is None
        with pytest.raises(build.BuildError, match="Go toolchain"):
            build.go()
        assert build.ensure_built() == binary
    assert _files_of(binary.parent) == before, "a current build must not be rebuilt"

    # The key covers go.mod, go.sum, the Go sources (not their tests) and the .proto contracts.
    mod, protos = tmp_path / "mod", tmp_path / "protos"
    mod.mkdir()
    for p in [build.MODULE_DIR / "go.mod", build.MODULE_DIR / "go.sum", *build.MODULE_DIR.glob("*.go")]:
        shutil.copy(p, mod / p.name)
    shutil.copytree(build.PROTOS_DIR / "crayfish", protos / "crayfish")
    base = build.source_hash(mod, protos)
    assert base == build.source_hash()
    (mod / "README.md").write_text("docs do not rebuild")
    (mod / "operator_test.go").write_text("package main\n// tests do not rebuild\n")
    assert build.source_hash(mod, protos) == base
    main = mod / "main.go"
    main.write_text(main.read_text() + "\n// changed\n")
    changed_src = build.source_hash(mod, protos)
    assert changed_src != base
    proto = protos / "crayfish/v1/batch.proto"
    proto.write_text(proto.read_text() + "\n// changed\n")
    assert build.source_hash(mod, protos) not in (base, changed_src)


def test_go_unit_tests(tmp_path):
    log = tmp_path / "go-test.log"
    rc = build.go_test(log, tmp_path / "work")
    out = log.read_text()
    assert rc == 0, out[-4000:]
    assert "--- PASS: TestSingleTensorReasonsAndDetails" in out and "--- FAIL" not in out, out[-4000:]


# -- config --------------------------------------------------------------------------------------

def _settings(**over) -> WorkerSettings:
    return offline_settings("go", **over)


@pytest.mark.parametrize("over, field", [
    ({"codec": "crayfish-json"}, "go worker: bad config: codec: 'crayfish-json' is not supported by the go engine"),
    ({"engine_options": {"parallelism_per_host": 2}},
     ("go worker: bad config: engine_options.parallelism_per_host: unknown option of the go engine (known: "
      "commit_interval_ms, fetch_max_wait_ms, warmup_rounds)")),
    ({"engine_options": {"fetch_max_wait_ms": 5}},
     "engine_options.fetch_max_wait_ms: Input should be greater than or equal to 10"),
    ({"backend": "torchscript"}, "backend: 'torchscript' is not available in the go engine"),
    ({"external": ExternalSettings(client="triton", target="127.0.0.1:1")}, "external.client: 'triton'"),
    ({"external": ExternalSettings(client="scoring", target="127.0.0.1:1", call_mode="pipelined")},
     "external.call_mode: 'pipelined'"),
    # Checked by the Go worker itself (after the build), in the same one-line form.
    ({"backend_options": {"threads": 2}}, "go worker: backend_options: backend 'onnxruntime' has no option 'threads'"),
    ({"backend": "sleep"}, "backend_options: backend 'sleep': option 'delay_ms' is required"),
])
def test_bad_config_fails_naming_the_field(models_dir, over, field):
    r = _launcher("--config", _settings(models_dir=str(models_dir), **over).model_dump_json(), timeout=600)
    assert r.returncode == 2, r.stderr
    assert field in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_config_from_the_settings_env_var(models_dir, tmp_path):
    cfg = tmp_path / "worker.json"
    cfg.write_text(_settings(models_dir=str(models_dir), codec="crayfish-json").model_dump_json())
    r = subprocess.run([sys.executable, "-m", "sps_workers.go"], capture_output=True, text=True, cwd=build.REPO_ROOT,
                       env=dict(os.environ, CRAYFISH_WORKER_SETTINGS=str(cfg)), timeout=300, check=False)
    assert r.returncode == 2 and "codec: 'crayfish-json'" in r.stderr, r.stderr


def test_missing_model_files_are_config_errors(tmp_path, models_dir):
    check_missing_model_files_are_config_errors("sps_workers.go", "go", tmp_path, models_dir)


# -- against the broker --------------------------------------------------------------------------

@pytest.fixture
def start_worker(kafka_bootstrap, models_dir, tmp_path):
    starter = WorkerStarter("go", kafka_bootstrap, models_dir, tmp_path, "ready file (written on assignment)")
    yield starter
    starter.close()


def test_dead_letters_and_outputs_match_the_python_operator(kafka_bootstrap, start_worker, models_dir):
    """The Go worker on the contract: the same DeadLetter (reason, detail, ids, source) as
    sps_workers.scoring_op for the same record, and the ScoredBatch fields carried over."""
    check_dead_letters_match_the_python_operator(kafka_bootstrap, start_worker, models_dir, "go")


def test_sigterm_stops_cleanly_with_offsets_committed(kafka_bootstrap, start_worker):
    # the launcher exec()s the worker: the service's pid is the Go binary
    check_sigterm_stops_cleanly(kafka_bootstrap, start_worker, {"commit_interval_ms": 60000}, lambda proc: "crayfish-go-worker" in proc.cmdline()[0])


def test_unreachable_scoring_server_is_dead_lettered_after_retries(kafka_bootstrap, start_worker):
    check_unreachable_scoring_server_is_dead_lettered(kafka_bootstrap, start_worker)


# -- named tensors (DataBatch.inputs, ScoredBatch.outputs) ----------------------------------------



def test_named_batches_are_scored_and_dead_lettered_as_the_python_operator(kafka_bootstrap, start_worker, tmp_path):
    check_named_batches_match_the_python_operator(kafka_bootstrap, start_worker, tmp_path, "go")



def test_every_dtype_goes_through_onnx_runtime_by_name(kafka_bootstrap, start_worker, tmp_path):
    check_every_dtype_goes_through_onnx_runtime_by_name(kafka_bootstrap, start_worker, tmp_path)

