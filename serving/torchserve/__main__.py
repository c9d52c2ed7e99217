"""``python -m serving.torchserve RUN_DIR``: become TorchServe's Java frontend (exec, same pid).

Run by :mod:`serving.torchserve.launcher` with the ``torch`` environment's interpreter. It does what
the ``torchserve --start --foreground`` script does -- ``java -Dmodel_server_home=<site-packages>
-cp .:<ts>/frontend/* org.pytorch.serve.ModelServer --python <this interpreter> -f
config.properties -s <model store> -ncs`` -- but ``exec``s Java in place of itself instead of
starting it as a child, because the script

- keeps ONE pid file for the whole machine (``$TMPDIR/.model_server.pid``) and refuses to start a
  second TorchServe while one runs (tests, benchmarks and several experiments may run side by side);
- leaves Java running when the script itself is signalled.

So the process the launcher started *is* the Java frontend; its Python workers are its children
in the same process group. ``RUN_DIR/launch.json`` (written by the launcher) holds the model
store, the JVM options and the worker temp dir; the working directory becomes ``RUN_DIR``, where
TorchServe writes ``key_file.json`` (token authorization) and its logs (``LOG_LOCATION``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import ts  # TorchServe: this module runs only with the torch environment's interpreter


def java_command(run_dir: Path, launch: dict) -> list[str]:
    ts_pkg = Path(ts.__file__).resolve().parent
    site = ts_pkg.parent
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise SystemExit("java not found (TorchServe's frontend needs Java 17): install a JDK "
                         "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    cmd = [java, f"-Dmodel_server_home={site}", f"-Djava.io.tmpdir={launch['tmp_dir']}",
           *launch.get("jvm_args", []),
           "-cp", f".:{ts_pkg / 'frontend' / '*'}", "org.pytorch.serve.ModelServer",
           "--python", sys.executable, "-f", str(run_dir / "config.properties"),
           "-s", launch["model_store"], "-ncs"]
    if launch.get("disable_token_auth"):
        cmd.append("--disable-token-auth")
    return cmd


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    run_dir = Path(argv[0]).resolve()
    launch = json.loads((run_dir / "launch.json").read_text())
    cmd = java_command(run_dir, launch)
    os.chdir(run_dir)
    print("exec:", " ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
