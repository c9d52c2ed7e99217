"""Start the mesh's services as local processes and wait for real readiness (no fixed sleeps)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from crayfish.kafka import admin_config

POLL_S = 0.05  # readiness polling interval
REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceError(RuntimeError):
    pass


class Service:
    """A service process with its log file; ``name`` is also its OTEL_SERVICE_NAME."""

    def __init__(self, name: str, args: list[str], log_path: Path, python: str | None = None,
                 env: dict | None = None):
        self.name = name
        self.log_path = log_path
        full_env = {**os.environ, "OTEL_SERVICE_NAME": name, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([python or sys.executable, *args], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=full_env, cwd=REPO_ROOT,
                                     start_new_session=True)

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

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode

    def stop_tree(self, timeout_s: float = 30.0) -> None:
        """For servers that manage their own children (Ray, Triton, TorchServe): SIGTERM the leader
        only and let it shut its processes down; then SIGKILL whatever is left of its process tree
        or of its session (the service runs in a session of its own), and reap the leader."""
        import psutil

        pid = self.proc.pid

        def tree() -> list:
            try:
                found = psutil.Process(pid).children(recursive=True)
            except psutil.Error:
                found = []
            for p in psutil.process_iter(["pid"]):
                try:
                    if p.pid != pid and os.getsid(p.pid) == pid:
                        found.append(p)
                except (ProcessLookupError, PermissionError, psutil.Error):
                    pass
            return found

        before = tree()
        if self.alive():
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout_s)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        left = before + tree()
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=10)
        self.stop(timeout_s=5)  # reaps the leader, closes the log

    def cpu_seconds(self) -> float:
        """User+system CPU time of the process and its children (while alive)."""
        import psutil

        try:
            p = psutil.Process(self.proc.pid)
            procs = [p, *p.children(recursive=True)]
            total = 0.0
            for q in procs:
                try:
                    t = q.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            return total
        except psutil.Error:
            return float("nan")


def wait_group_assigned(bootstrap: str, group: str, members: int, partitions: int,
                        services: list[Service], timeout_s: float = 90.0) -> None:
    """Ready = the consumer group is Stable with ``members`` members holding all partitions."""
    from confluent_kafka import ConsumerGroupState

    admin = AdminClient(admin_config(bootstrap))
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        for s in services:
            s.check_alive()
        try:
            desc = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=5)
            assigned = sum(len(m.assignment.topic_partitions) for m in desc.members if m.assignment)
            last = f"state={desc.state}, members={len(desc.members)}, assigned partitions={assigned}"
            if (desc.state == ConsumerGroupState.STABLE and len(desc.members) >= members
                    and assigned >= partitions):
                return
        except Exception as exc:  # noqa: BLE001 - group not known yet
            last = str(exc)
        time.sleep(POLL_S)
    raise ServiceError(f"consumer group {group} not ready after {timeout_s:.0f}s ({last})")


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


def wait_engine_ready(engine, settings, partitions: int, services: list[Service], timeout_s: float = 180.0) -> None:
    """Ready = the worker's consumer group holds every partition (engines that join the group), or
    the engine wrote ``settings.ready_file`` (engines that assign partitions themselves: Flink,
    Spark, Bytewax, ...). ``engine``: a sps_workers.EngineSpec."""
    if engine.joins_consumer_group:
        wait_group_assigned(settings.bootstrap, settings.consumer_group, settings.parallelism, partitions,
                            services, timeout_s=timeout_s)
        return
    if not settings.ready_file:
        raise ServiceError(f"engine {engine.name} does not join the consumer group and no ready_file is set")
    wait_file(Path(settings.ready_file), services, timeout_s=timeout_s, what=f"{engine.name} worker")
