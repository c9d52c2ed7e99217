"""Host primitives (crayfish/host): one place for paths and caches, ports, process trees."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from crayfish.host import paths
from crayfish.host.ports import free_port, free_ports, port_free
from crayfish.host.procs import ProcessRecord, Service, members, stop_tree

REPO = paths.REPO_ROOT
SOURCE_DIRS = ("crayfish", "observability", "serving", "sps_workers", "services", "benchmarks", "tools")


def test_no_module_but_paths_names_the_cache_folder():
    """Every cache goes through crayfish.host.paths.cache_dir, so CRAYFISH_CACHE_DIR moves all of them."""
    offenders = []
    for d in SOURCE_DIRS:
        for f in (REPO / d).rglob("*.py"):
            if f == REPO / "crayfish" / "host" / "paths.py" or "/v1/" in str(f):
                continue
            for i, line in enumerate(f.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if re.search(r"""["']\.cache["']|REPO_ROOT\s*=|parents\[\d\]\s*$|\.parent\.parent""", code):
                    offenders.append(f"{f.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_cache_dir_moves_every_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CRAYFISH_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CRAYFISH_MODELS_DIR", raising=False)
    monkeypatch.delenv("CRAYFISH_KSTREAMS_CACHE", raising=False)
    monkeypatch.delenv("CRAYFISH_TORCHSERVE_STUBS_DIR", raising=False)
    monkeypatch.delenv("CRAYFISH_TORCHSERVE_SERVERS_DIR", raising=False)
    from observability.jaeger import build as jaeger
    from serving.torchserve.client import servers_dir
    from serving.models import default_models_dir
    from serving.torchserve.grpc_stubs import stubs_root
    from services.broker import launcher
    from services.stack.settings import StackSettings
    from sps_workers.flink import jars as flink_jars, protocompat
    from sps_workers.kafka_streams import build as kstreams
    from sps_workers.ray.options import RayOptions

    places = {"kafka jars": launcher.kafka_lib(), "broker state": launcher.default_state_dir(),
              "models": default_models_dir(), "jaeger": jaeger.binary(), "flink jars": flink_jars._lib(),
              "flink stubs": protocompat.stubs_dir(), "kafka streams builds": kstreams._cache(),
              "ray temp": Path(RayOptions().temp_dir), "torchserve stubs": stubs_root(),
              "torchserve servers": servers_dir(), "stack": StackSettings().dir}
    outside = {k: v for k, v in places.items() if not v.is_relative_to(tmp_path)}
    assert not outside, outside


def test_models_and_envs_have_their_own_override(tmp_path, monkeypatch):
    monkeypatch.setenv("CRAYFISH_MODELS_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("CRAYFISH_ENVS_DIR", str(tmp_path / "e"))
    from crayfish.host import envs

    assert paths.models_dir() == tmp_path / "m" and envs.env_dir("ray") == tmp_path / "e" / "ray"
    monkeypatch.delenv("CRAYFISH_MODELS_DIR")
    monkeypatch.delenv("CRAYFISH_ENVS_DIR")
    monkeypatch.delenv("CRAYFISH_CACHE_DIR", raising=False)
    assert paths.models_dir() == REPO / ".cache" / "models" and paths.envs_dir() == REPO / ".envs"


def test_free_ports_are_distinct_loopback_and_bindable():
    ports = free_ports(20)
    assert len(set(ports)) == 20
    for p in ports[:3]:
        assert port_free(p)
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
            s.listen()
            assert not port_free(p)
    assert port_free(free_port())




def _tree_script(out: Path) -> list[str]:
    """A leader that runs a child, which starts a grandchild and exits (the grandchild is re-parented
    away from the leader but keeps its session), then sleeps; each writes its pid."""
    grandchild = ("import os, sys, time; open(sys.argv[1] + '/grandchild', 'w').write(str(os.getpid())); "
                  "time.sleep(600)")
    child = ("import os, sys, subprocess; subprocess.Popen([sys.executable, '-c', sys.argv[2], sys.argv[1]]); "
             "open(sys.argv[1] + '/child', 'w').write(str(os.getpid()))")
    leader = ("import os, sys, subprocess, time; subprocess.run([sys.executable, '-c', sys.argv[2], sys.argv[1], "
              "sys.argv[3]]); open(sys.argv[1] + '/leader', 'w').write(str(os.getpid())); time.sleep(600)")
    return ["-c", leader, str(out), child, grandchild]


def _wait_for(path: Path, timeout_s: float = 30) -> int:
    return int(_wait_for_text(path, timeout_s))


@pytest.mark.parametrize("leader_first", [False, True])
def test_stop_takes_the_whole_tree_with_it(tmp_path, leader_first):
    svc = Service("tree", _tree_script(tmp_path), tmp_path / "tree.log")
    grandchild = _wait_for(tmp_path / "grandchild")
    _wait_for(tmp_path / "leader")
    gc = psutil.Process(grandchild)
    assert gc.ppid() != svc.proc.pid   # re-parented: not in the leader's tree any more
    assert {p.pid for p in members(svc.record)} >= {svc.proc.pid, grandchild}
    code = svc.stop(timeout_s=5, leader_first=leader_first)
    assert code == -15   # SIGTERM ended the leader
    assert not gc.is_running() or gc.status() == psutil.STATUS_ZOMBIE
    assert members(svc.record) == []


def test_a_service_keeps_its_temporary_files_in_a_folder_that_stop_removes(tmp_path):
    leave = ("import os, sys, tempfile, time; f = tempfile.NamedTemporaryFile(delete=False); "
             "open(sys.argv[1], 'w').write(f.name); time.sleep(600)")
    svc = Service("litter", ["-c", leave, str(tmp_path / "left")], tmp_path / "litter.log")
    left = Path(_wait_for_text(tmp_path / "left"))
    assert left.parent == svc.scratch and svc.scratch.name.startswith("crayfish-litter-")
    svc.stop(timeout_s=0.2)   # whatever ends it, nothing it wrote is left behind
    assert not left.exists() and not svc.scratch.exists()


def _wait_for_text(path: Path, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.02)
    return path.read_text()


def test_a_record_never_matches_a_reused_pid(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    rec = ProcessRecord.of(proc.pid)
    stale = ProcessRecord(rec.pid, rec.create_time - 100.0, rec.sid, rec.pgid)
    try:
        assert stop_tree(stale, timeout_s=1) == [] and proc.poll() is None   # not the recorded process
        assert stop_tree(rec, timeout_s=5) == []
        assert proc.wait(5) == -15
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ProcessRecord.of(proc.pid) is None or ProcessRecord.of(proc.pid).create_time != rec.create_time
    assert stop_tree(None) == []


def test_a_failing_pip_step_ends_in_one_line_with_pips_reason(tmp_path, monkeypatch):
    from crayfish.host import envs

    monkeypatch.setattr(envs, "PIP_RETRY_PAUSE_S", 0.0)
    said = []
    missing = tmp_path / "no-such-project"
    with pytest.raises(envs.EnvironmentError_) as refused:
        envs._pip("ray", [sys.executable, "-m", "pip", "install", "--no-index", str(missing)],
                  said.append, attempts=2)
    message = str(refused.value)
    assert message.startswith("environment 'ray': pip install failed: ") and "\n" not in message
    assert "no-such-project" in message or "does not exist" in message, message
    assert sum("attempt 1/2" in line for line in said) == 1
    assert any(line.startswith("  pip: ") for line in said)


def test_a_nearly_full_disk_is_named_before_pip_starts(tmp_path, monkeypatch):
    from crayfish.host import envs

    monkeypatch.setenv("CRAYFISH_ENVS_DIR", str(tmp_path))
    monkeypatch.setattr(envs, "MIN_FREE_BYTES", 1024**5)
    with pytest.raises(envs.EnvironmentError_, match=r"environment 'spark': only [\d.]+ GiB free"):
        envs.build_env("spark", force=True)
    assert not (tmp_path / "spark").exists()
