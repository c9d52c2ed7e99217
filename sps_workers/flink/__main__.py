"""``python -m sps_workers.flink --config <json | @file>``: the flink engine's worker process.

A thin supervisor. The runner stops a worker by signalling its whole process group; Flink's JVM
(the local mini-cluster) and its Python workers must not get that signal directly, or they die
before the job is stopped. So the driver (sps_workers.flink.job) runs in a session of its own: this
process validates the config (a bad one fails here, naming the field), starts the driver, hands it
SIGTERM/SIGINT, and kills what is left of the driver's session if it has not finished within
the driver's commit wait (11 s) + engine_options.stop_timeout_s + 4 s (20 s by default).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from sps_workers.flink.job import COMMIT_WAIT_S, load_settings
from sps_workers.settings import config_error


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sps_workers.flink",
                                description="PyFlink scoring job (Kafka -> scoring -> Kafka).")
    p.add_argument("--config", required=True, help="WorkerSettings as JSON, or @path to a JSON file")
    a = p.parse_args(argv)
    try:
        _, opts = load_settings(a.config)
    except (OSError, ValueError) as exc:
        print(f"flink worker: bad config: {config_error(exc)}", file=sys.stderr)
        return 2
    child = subprocess.Popen([sys.executable, "-m", "sps_workers.flink.job", "--config", a.config],
                             start_new_session=True)
    deadline = [None]

    def _forward(signum, _frame):
        if deadline[0] is None:
            deadline[0] = time.monotonic() + COMMIT_WAIT_S + opts.stop_timeout_s + 4
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    try:
        while True:
            try:
                return child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if deadline[0] is not None and time.monotonic() > deadline[0]:
                    print("flink: driver did not stop in time; killing its processes", file=sys.stderr, flush=True)
                    os.killpg(child.pid, signal.SIGKILL)
    finally:
        try:  # the JVM and Python workers live in the driver's session: leave nothing behind
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


if __name__ == "__main__":
    sys.exit(main())
