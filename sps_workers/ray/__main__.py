"""``python -m sps_workers.ray --config <json | @file>``: the Ray actor pipeline worker (see the
package docstring, sps_workers.ray, for how it maps onto Ray and its knobs).

This process is a small supervisor: it checks the configuration, then runs the Ray driver as a
child in a session of its own and forwards SIGTERM / SIGINT to it. The runner stops a worker by
signalling the worker's whole process group; a local Ray's processes (GCS, raylet, the actors'
workers) would get that signal too and die before the driver had drained the pipeline. In its own
session only the driver gets the signal, and it shuts Ray down after the drain.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

from sps_workers.ray import driver
from sps_workers.ray.options import RayOptions
from sps_workers.runtime import read_settings

CHILD_FLAG = "CRAYFISH_RAY_DRIVER_CHILD"


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its supervisor dies (even by SIGKILL)."""
    try:
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _supervise(argv: list[str]) -> int:
    child = subprocess.Popen([sys.executable, "-m", "sps_workers.ray", *argv],
                             env={**os.environ, CHILD_FLAG: str(os.getpid())}, start_new_session=True)

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    try:
        # whatever of the driver's session outlived it (Ray's agents, after a driver crash)
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return code


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    settings, opts = read_settings(argv, "python -m sps_workers.ray", "Ray actor scoring worker.", RayOptions)
    if not os.environ.get(CHILD_FLAG):
        sys.exit(_supervise(argv))
    _die_with_parent()
    if os.getppid() != int(os.environ[CHILD_FLAG]):
        sys.exit("ray worker: supervisor gone before start")
    if opts.local:
        driver.local_ray_env()
    else:
        driver.remote_ray_env()
    driver.run(settings, opts)


if __name__ == "__main__":
    main()
