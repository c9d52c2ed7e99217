"""The state file of a native stack, ``<dir>/stack.json``: what is running, where, and how to find
each process again — the one thing ``down``, ``ps``, ``logs`` and ``crayfish run --stack`` read.

Written (atomically) before the first process starts and after each start, so ``down`` can always
stop what a failed or interrupted ``up`` left. Its keys (``version`` 1; other code reads them, so
add keys rather than change them):

    status            starting | up | failed | stopping-failed (``down`` renames a stopped one to
                      stack.stopped.json with status ``stopped`` and ``stopped_at``)
    started_at, up_s, dir, config, state_file, logs_dir
    endpoints         kafka_bootstrap, scoring, otlp_grpc, otlp_http, jaeger_query,
                      jaeger_query_grpc, jaeger_health (URLs or host:port, all on 127.0.0.1)
    ports             every ``ports.*`` setting with the port actually used
    topics, consumer_group, worker_parallelism, model
    collector_dir, collector_ready_file, kafka_data_dir
    services          one record per started service, in start order: name, pid, create_time,
                      sid, pgid, cmd, log, logs, ports, children (descendants: pid, create_time, cmd)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from crayfish.host import procs as host_procs
from services.stack.settings import HOST, StackSettings

STATE_VERSION = 1
STOPPED_FILE = "stack.stopped.json"   # the last state, kept by `down` (for `ps` and `logs`)


class StackError(RuntimeError):
    pass


def read_state(state_file: Path) -> dict | None:
    """The state in ``state_file``; None when there is none."""
    try:
        return json.loads(Path(state_file).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise StackError(f"{state_file}: unreadable state file ({exc}); remove it after checking "
                         f"no stack process is left") from None


def write_state(state_file: Path, state: dict) -> None:
    tmp = state_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, state_file)


def find_service(state: dict, name: str) -> dict | None:
    """The record of service ``name`` in ``state``; None when it was not started."""
    return next((r for r in state.get("services", []) if r["name"] == name), None)


def new_state(s: StackSettings, ports: dict[str, int], config_path: Path | None) -> dict:
    """The state of a stack about to start on ``ports`` (no service started yet)."""
    otlp = f"http://{HOST}:{ports['jaeger_otlp_grpc']}"
    collector_dir = s.dir / "collector"
    return {
        "version": STATE_VERSION, "status": "starting", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dir": str(s.dir), "config": str(config_path) if config_path else None,
        "state_file": str(s.state_file), "logs_dir": str(s.dir / "logs"),
        "endpoints": {
            "kafka_bootstrap": f"{HOST}:{ports['kafka']}",
            "scoring": f"{HOST}:{ports['scoring']}",
            "otlp_grpc": otlp,
            "otlp_http": f"http://{HOST}:{ports['jaeger_otlp_http']}",
            "jaeger_query": f"http://{HOST}:{ports['jaeger_query']}",
            "jaeger_query_grpc": f"{HOST}:{ports['jaeger_query_grpc']}",
            "jaeger_health": f"http://{HOST}:{ports['jaeger_health']}/status",
        },
        "ports": ports,
        "topics": s.topics.model_dump(),
        "consumer_group": s.consumer_group,
        "worker_parallelism": s.worker_parallelism,
        "model": s.model,
        "collector_dir": str(collector_dir),
        "collector_ready_file": str(collector_dir / "collector.ready"),
        "kafka_data_dir": str(s.dir / "kafka"),
        "services": [],
    }


def stack_endpoints(path: Path | str) -> dict:
    """The endpoints of a running stack (``crayfish run --stack``): ``path`` is its state file or
    folder. Raises StackError when no stack is up there or its broker is gone."""
    p = Path(path)
    if p.is_dir():
        p = p / "stack.json"
    state = read_state(p)
    if state is None:
        raise StackError(f"{p}: no running stack there (start one with `make up`)")
    if state.get("status") != "up":
        raise StackError(f"{p}: the stack is {state.get('status')!r}, not up (`make down` then `make up`)")
    kafka = find_service(state, "kafka")
    if kafka is None or host_procs.live(kafka["pid"], kafka["create_time"]) is None:
        raise StackError(f"{p}: the stack's Kafka (pid {kafka and kafka['pid']}) is not running; `make down` "
                         f"then `make up`")
    return dict(state["endpoints"])
