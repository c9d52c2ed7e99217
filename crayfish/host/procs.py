"""Service processes: start one with its log in a session of its own, wait for what it writes when
ready, and stop it with every process it started — the one place that knows how to stop a tree.

A service is found again (also from another process, e.g. ``make down``) by its
:class:`ProcessRecord`: pid *and* start time, so a reused pid is never mistaken for it, plus its
session and process group, which the processes it started keep even when re-parented.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from crayfish.host.paths import REPO_ROOT

POLL_S = 0.05  # readiness polling interval


class ServiceError(RuntimeError):
    pass


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    create_time: float
    sid: int
    pgid: int

    @classmethod
    def of(cls, pid: int) -> ProcessRecord | None:
        try:
            return cls(pid, psutil.Process(pid).create_time(), os.getsid(pid), os.getpgid(pid))
        except (OSError, psutil.Error):
            return None

    def to_dict(self) -> dict:
        return asdict(self)


def live(pid: int, create_time: float) -> psutil.Process | None:
    """The process ``pid`` if it is the one that started at ``create_time`` and not a zombie."""
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - create_time) > 0.01 or p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except psutil.Error:
        return None


def members(rec: ProcessRecord, known: Iterable[tuple[int, float]] = ()) -> list[psutil.Process]:
    """Every live process of a service: the leader, its descendants, the ``known`` ones
    (``(pid, create_time)`` pairs recorded earlier), and any
    process of its session or process group started after it (a child re-parented when its parent
    died still carries them)."""
    found: dict[int, psutil.Process] = {}
    leader = live(rec.pid, rec.create_time)
    if leader is not None:
        found[leader.pid] = leader
        try:
            found.update((c.pid, c) for c in leader.children(recursive=True))
        except psutil.Error:
            pass
    for pid, create_time in known:
        p = live(pid, create_time)
        if p is not None:
            found[p.pid] = p
    if _reused(rec.pid, rec.create_time):
        # The leader's pid belongs to another process now, which Linux allows only once no process
        # of the old session or group is left: everything in that session is the new one's.
        return [p for p in found.values() if _not_zombie(p)]
    for p in psutil.process_iter():
        if p.pid in found or p.pid == os.getpid():
            continue
        try:
            if (os.getsid(p.pid) == rec.sid or os.getpgid(p.pid) == rec.pgid) and \
                    p.create_time() >= rec.create_time - 0.01:
                found[p.pid] = p
        except (OSError, psutil.Error):
            pass
    return [p for p in found.values() if _not_zombie(p)]


def _not_zombie(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reused(pid: int, create_time: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - create_time) > 0.01
    except psutil.Error:
        return False


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


def stop_tree(rec: ProcessRecord | None, timeout_s: float = 30.0, *, leader_first: bool = False,
              known: Iterable[tuple[int, float]] = (), log=None) -> list[psutil.Process]:
    """Stop a service and everything it started; returns what is still alive (normally nothing).

    SIGTERM its process group (``leader_first``: the leader only, for servers that shut their own
    workers down: Ray, Triton, TorchServe) and wait up to ``timeout_s`` for the leader to exit: it
    decides how its children end (a Flink driver stops its job with a savepoint, a worker waits for
    its processes to commit). Then SIGKILL every member still there — also those outside the group,
    in its session or re-parented — and wait up to 10 s more. The leader is left for its parent to
    reap (its ``Popen`` keeps the exit code); other processes that are our children are reaped."""
    if rec is None:
        return []
    known = list(known)
    procs = members(rec, known)
    leader = live(rec.pid, rec.create_time)
    if leader is not None:
        try:
            if leader_first:
                leader.terminate()
            else:
                os.killpg(rec.pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
        deadline = time.monotonic() + timeout_s
        while live(rec.pid, rec.create_time) is not None and time.monotonic() < deadline:
            time.sleep(POLL_S)
    left = members(rec, known)
    if left:
        if log is not None and live(rec.pid, rec.create_time) is not None:
            log(f" still running {timeout_s:.0f}s after SIGTERM: SIGKILL")
        _kill(left)
        deadline = time.monotonic() + 10.0
        while left and time.monotonic() < deadline:
            time.sleep(POLL_S)
            left = members(rec, known)
    # Until they are gone, not only dead: our children reaped here, others by their parent or init.
    psutil.wait_procs([p for p in procs if p.pid != rec.pid], timeout=10)
    return left


class Service:
    """A service process started in a session of its own, with its log file; ``name`` is also its
    OTEL_SERVICE_NAME.

    Its temporary files go to a folder of its own (``TMPDIR``; the JVM launchers pass it on as
    ``java.io.tmpdir``), removed by :meth:`stop`: a killed JVM never cleans what it extracted
    (ONNX Runtime's native library, Flink's RPC jar and mini-cluster folders, ~20 MB a start)."""

    def __init__(self, name: str, args: list[str], log_path: Path, python: str | None = None,
                 env: dict | None = None):
        self.name = name
        self.log_path = log_path
        full_env = {**os.environ, "OTEL_SERVICE_NAME": name, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
        self.scratch = Path(tempfile.mkdtemp(prefix=f"crayfish-{name}-"))
        full_env["TMPDIR"] = str(self.scratch)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([python or sys.executable, *args], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=full_env, cwd=REPO_ROOT,
                                     start_new_session=True)
        self.record = ProcessRecord(self.proc.pid, psutil.Process(self.proc.pid).create_time(),
                                    self.proc.pid, self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if not self.alive():
            raise ServiceError(f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}")

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ServiceError(f"{self.name} did not finish within {timeout_s:.0f}s:\n{self.log_tail()}") from None

    def stop(self, timeout_s: float = 30.0, *, leader_first: bool = False) -> int | None:
        """Stop it and everything it started (:func:`stop_tree`); its exit code (negative: the
        signal that ended it)."""
        stop_tree(self.record, timeout_s, leader_first=leader_first)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
        return self.proc.returncode

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process and its descendants (while alive)."""
        try:
            p = psutil.Process(self.proc.pid)
            total = 0.0
            for q in [p, *p.children(recursive=True)]:
                try:
                    t = q.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            return total
        except psutil.Error:
            return float("nan")


def wait_file(path: Path, services: list[Service], timeout_s: float, what: str | None = None) -> None:
    """Wait for a ready file a service writes once it serves; fail early if a service dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return
        for s in services:
            s.check_alive()
        time.sleep(POLL_S)
    tail = services[0].log_tail() if services else ""
    raise ServiceError(f"{what or path.name} not ready after {timeout_s:.0f}s:\n{tail}")
