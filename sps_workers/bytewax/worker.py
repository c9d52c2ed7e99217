"""Runs the dataflow as a local Bytewax cluster: parallelism / workers_per_process processes."""

from __future__ import annotations

import logging
import os
import signal
import sys
from datetime import timedelta

from bytewax.run import cli_main

from crayfish.host.ports import free_ports
from crayfish.kafka_client import KafkaClientError
from sps_workers.bytewax.dataflow import STOP, Instances, build_flow
from sps_workers.bytewax.options import BytewaxOptions
from sps_workers.runtime import read_settings, run_processes
from sps_workers.settings import WorkerSettings

log = logging.getLogger("crayfish.worker.bytewax")


def run_process(settings: WorkerSettings, options: BytewaxOptions, proc_id: int, addresses: list[str] | None) -> None:
    """One Bytewax process (of a cluster when ``addresses`` is set); runs until SIGTERM/SIGINT."""
    logging.basicConfig(level=os.environ.get("CRAYFISH_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

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


def main(argv: list[str] | None = None) -> None:
    settings, options = read_settings(argv, "python -m sps_workers.bytewax",
                                      "Bytewax scoring worker (a local Bytewax cluster).", BytewaxOptions)
    try:   # references resolve and the properties can work: one line naming the property otherwise
        settings.kafka_client.check()
    except KafkaClientError as exc:
        print(f"bytewax worker: bad config: kafka_client: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    n_proc = settings.parallelism // options.workers_per_process
    if n_proc == 1:
        run_process(settings, options, 0, None)
        return
    addresses = [f"127.0.0.1:{p}" for p in free_ports(n_proc)]
    run_processes(run_process, [(settings, options, i, addresses) for i in range(n_proc)],
                  [f"{settings.worker_id}-p{i}" for i in range(n_proc)], "bytewax worker processes")
