"""A Flink session cluster on this machine, started from the apache-flink wheel's own scripts.

For the remote-JobManager path (``engine_options.jobmanager``) without a Flink download: one
JobManager and one TaskManager, both on 127.0.0.1, with ``flink-python`` on the cluster's class
path (the wheel keeps it in ``opt/``, a cluster needs it in ``lib/``) and the class of
:mod:`sps_workers.flink.loopback` before it (the Python workers' gRPC servers on 127.0.0.1)::

    .envs/flink/bin/python -m sps_workers.flink.cluster --slots 2 [--rest-port 8081] [--dir DIR]

It prints ``rest 127.0.0.1:<port>`` once the TaskManager has registered its slots (and writes the
same address to ``--ready-file``), runs until SIGTERM / SIGINT, then stops both JVMs. Give that
address as ``engine_options: {jobmanager: "127.0.0.1:<port>"}``. The TaskManager starts the job's
Python workers with the job's ``python.executable`` (this environment's interpreter), so it must
run where this checkout and ``.envs/flink`` are, as a real cluster's TaskManagers must
(sps_workers/flink/__init__.py, "Scaling out on a Flink cluster").

Files: ``DIR/conf/config.yaml`` (generated), ``DIR/lib`` (links to the wheel's jars),
``DIR/log`` (the JVMs' logs). ``DIR`` defaults to a temporary folder removed on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from crayfish.host.ports import free_port
from sps_workers.flink.loopback import ensure_jar, flink_home, flink_python_jar


def cluster_config(rest_port: int, rpc_port: int, slots: int) -> dict[str, str]:
    """Flat Flink keys: every endpoint of both processes on loopback."""
    return {
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.rpc.port": str(rpc_port),
        "jobmanager.memory.process.size": "1024m",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.host": "127.0.0.1",
        "taskmanager.numberOfTaskSlots": str(slots),
        "taskmanager.memory.process.size": "1728m",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": str(rest_port),
        "parallelism.default": "1",
    }


def prepare(home: Path, work: Path, config: dict[str, str]) -> dict[str, str]:
    """Lay out conf/, lib/ and log/ under ``work``; return the environment for the wheel's scripts."""
    conf, lib, log, tmp = work / "conf", work / "lib", work / "log", work / "tmp"
    for d in (conf, lib, log, tmp):
        d.mkdir(parents=True, exist_ok=True)
    # What the JVMs extract or spill goes under ``work`` (removed with it), not into /tmp.
    config = {**config, "env.java.opts.all": f"-Djava.io.tmpdir={tmp}", "io.tmp.dirs": str(tmp)}
    # flink-python on the class path, preceded by the class that keeps its Beam servers on loopback
    for jar in [*sorted((home / "lib").glob("*.jar")), flink_python_jar(home), ensure_jar()]:
        link = lib / jar.name
        if not link.exists():
            link.symlink_to(jar)
    (conf / "config.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))
    shutil.copy(home / "conf" / "log4j-console.properties", conf / "log4j-console.properties")
    return {**os.environ, "FLINK_CONF_DIR": str(conf), "FLINK_LIB_DIR": str(lib), "FLINK_LOG_DIR": str(log)}


def overview(rest: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{rest}/overview", timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


class SessionCluster:
    """JobManager + TaskManager processes (each in its own session, so a stop reaches the JVM)."""

    def __init__(self, work: Path, slots: int, rest_port: int | None = None):
        self.home = flink_home()
        self.slots = slots
        self.rest = f"127.0.0.1:{rest_port or free_port()}"
        self.env = prepare(self.home, work, cluster_config(int(self.rest.rsplit(":", 1)[1]), free_port(), slots))
        self.log_dir = work / "log"
        self.procs: list[subprocess.Popen] = []

    def start(self, timeout_s: float = 120.0) -> str:
        for role in ("jobmanager", "taskmanager"):
            out = open(self.log_dir / f"{role}.out", "ab")
            self.procs.append(subprocess.Popen(["bash", str(self.home / "bin" / f"{role}.sh"), "start-foreground"],
                                               env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                               start_new_session=True))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[1]} exited with {p.returncode}; logs in {self.log_dir}")
            ov = overview(self.rest)
            if ov and ov.get("taskmanagers", 0) >= 1 and ov.get("slots-total", 0) >= self.slots:
                return self.rest
            time.sleep(0.5)
        raise TimeoutError(f"no TaskManager with {self.slots} slots at {self.rest} after {timeout_s:.0f} s; "
                           f"logs in {self.log_dir}")

    def stop(self, timeout_s: float = 20.0) -> None:
        for p in reversed(self.procs):  # TaskManager first
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sps_workers.flink.cluster", description=__doc__.split("\n")[0])
    ap.add_argument("--slots", type=int, default=2, help="task slots of the TaskManager (>= the job's largest operator parallelism)")
    ap.add_argument("--rest-port", type=int, default=None, help="REST port (default: a free one)")
    ap.add_argument("--dir", type=Path, default=None, help="conf/, lib/ and log/ go here (default: a temporary folder)")
    ap.add_argument("--ready-file", type=Path, default=None, help="write the REST address here once the cluster is up")
    args = ap.parse_args(argv)
    if args.slots < 1:
        ap.error("--slots must be >= 1")
    work = args.dir or Path(tempfile.mkdtemp(prefix="crayfish-flink-cluster-"))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    cluster = SessionCluster(work, args.slots, args.rest_port)
    try:
        try:
            rest = cluster.start()
        except (RuntimeError, TimeoutError) as e:
            print(f"flink cluster: {e}", file=sys.stderr)
            return 1
        print(f"rest {rest}", flush=True)
        if args.ready_file:
            args.ready_file.write_text(rest)
        while not stop and all(p.poll() is None for p in cluster.procs):
            time.sleep(0.2)
        return 0 if stop else 1
    finally:
        cluster.stop()
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
