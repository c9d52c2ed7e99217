"""Runs the dataflow as a local Bytewax cluster: parallelism / workers_per_process processes."""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mproc
import os
import signal
import socket
import sys
from datetime import timedelta

from sps_workers.bytewax.options import BytewaxOptions, parse_options
from sps_workers.settings import WorkerSettings

log = logging.getLogger("crayfish.worker.bytewax")


def run_process(settings: WorkerSettings, options: BytewaxOptions, proc_id: int, addresses: list[str] | None) -> None:
    """One Bytewax process (of a cluster when ``addresses`` is set); runs until SIGTERM/SIGINT."""
    logging.basicConfig(level=os.environ.get("CRAYFISH_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from bytewax.run import cli_main

    from sps_workers.bytewax.dataflow import STOP, Instances, build_flow

    def _stop(_signum, _frame):
        # Not KeyboardInterrupt: raised inside a step it makes Bytewax panic. The flag ends the
        # sources instead (Bytewax runs Python signal handlers while it works); the dataflow completes.
        STOP.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    instances = Instances(settings)
    try:
        flow = build_flow(settings, instances)
        # As `python -m bytewax.run -w W [-i I -a ADDRS]` does; no addresses: one process, no network.
        cli_main(flow, workers_per_process=options.workers_per_process,
                 process_id=proc_id if addresses else None, addresses=addresses,
                 epoch_interval=timedelta(seconds=options.epoch_interval_s))
    finally:
        instances.close_all()


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _load(argv: list[str] | None) -> tuple[WorkerSettings, BytewaxOptions]:
    parser = argparse.ArgumentParser(prog="python -m sps_workers.bytewax",
                                     description="Bytewax scoring worker (a local Bytewax cluster).")
    parser.add_argument("--config", required=True, help="WorkerSettings as JSON, or @path to a JSON file")
    args = parser.parse_args(argv)
    raw = args.config
    if raw.startswith("@"):
        with open(raw[1:]) as f:
            raw = f.read()
    settings = WorkerSettings.model_validate(json.loads(raw))
    try:
        options = parse_options(settings.engine_options, settings.parallelism)
    except ValueError as exc:
        sys.exit(f"bytewax worker: {exc}")
    return settings, options


def main(argv: list[str] | None = None) -> None:
    settings, options = _load(argv)
    n_proc = settings.parallelism // options.workers_per_process
    if n_proc == 1:
        run_process(settings, options, 0, None)
        return
    addresses = [f"127.0.0.1:{p}" for p in _free_ports(n_proc)]
    ctx = mproc.get_context("spawn")
    procs = [ctx.Process(target=run_process, args=(settings, options, i, addresses),
                         name=f"{settings.worker_id}-p{i}") for i in range(n_proc)]
    for p in procs:
        p.start()

    def _forward(signum, _frame):
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    codes = []
    for p in procs:
        p.join()
        codes.append(p.exitcode)
    if any(codes):
        sys.exit(f"bytewax worker processes exited with codes {codes}")
