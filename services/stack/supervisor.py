"""Start and stop the native stack: one generic loop over the declared services
(:data:`services.stack.declarations.STACK`).

``up``   builds what is missing, picks the ports, writes the state file, then for each service in
         order: waits until every service it depends on is healthy, runs its launch (config,
         topics), starts it in a session of its own and records it in the state file; finally
         waits for the rest. Each wait polls the service's real health check (never a fixed sleep)
         and fails early when the process exits. On any failure it stops what it started.
``down`` SIGTERM to each process group (in reverse start order: collector first, Jaeger last),
         SIGKILL after ``stop_timeout_s``; then scans every process for members of the recorded
         sessions / process groups and the recorded descendants, and fails if any is left.
         Idempotent.

``ps`` and ``logs``: :mod:`services.stack.status`, :mod:`services.stack.logs`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from crayfish.host.procs import Service
from services.stack.declarations import BY_NAME, STACK, StackContext, StackService
from services.stack.health import wait_healthy
from services.stack.processes import (
    assign_ports,
    leader,
    members,
    record_descendants,
    service_record,
    stop_service,
)
from services.stack.settings import StackSettings
from services.stack.state import (
    STOPPED_FILE,
    StackError,
    find_service,
    new_state,
    read_state,
    write_state,
)
from services.stack.status import shown_path


def _running_stack(s: StackSettings, log) -> dict | None:
    """The state of a stack already up and healthy in ``s.dir`` (None when none runs; a stale
    state file is removed). A partly running one is an error: `make down` first."""
    old = read_state(s.state_file)
    if old is None:
        return None
    running = [r["name"] for r in old.get("services", []) if members(r)]
    if not running:
        s.state_file.unlink()   # stale: nothing of it runs any more
        return None
    bad = [svc.name for svc in STACK if (rec := find_service(old, svc.name)) is None
           or leader(rec) is None or svc.health(old)]
    if old.get("status") == "up" and not bad:
        log(f"the stack in {s.dir} is up already")
        return old
    raise StackError(f"a stack in {s.dir} is partly running ({', '.join(running)} alive; "
                     f"unhealthy or missing: {', '.join(bad)}): run `make down` first")


def _start(svc: StackService, ctx: StackContext) -> Service:
    """Launch one service and record it in the state file."""
    launch = svc.launch(ctx)
    stdout = ctx.logs_dir / (launch.stdout or f"{svc.name}.log")
    proc = Service(svc.name, launch.args, stdout, python=launch.program, env=launch.env)
    logs = [stdout] + ([ctx.logs_dir / launch.main_log] if launch.main_log else [])
    ctx.state["services"].append(service_record(
        proc, [ctx.ports[k] for k in svc.ports], launch.shown_cmd or [launch.program, *launch.args],
        log=str(logs[-1]), logs=[str(p) for p in logs]))
    write_state(ctx.settings.state_file, ctx.state)
    return proc


def _start_all(ctx: StackContext, started: dict[str, Service], log) -> None:
    """The generic loop: each service once its dependencies are healthy, then wait for all."""
    healthy: set[str] = set()

    def wait_for(names) -> None:
        for svc in STACK:   # in start order, so the "ready" lines come in that order
            if svc.name in names and svc.name not in healthy:
                wait_healthy(svc.name, lambda: svc.health(ctx.state), started[svc.name],
                             ctx.settings.ready_timeout_s)
                healthy.add(svc.name)
                log(f"  {svc.name:13s} ready  {svc.ready_note(ctx.state)}")

    for svc in STACK:
        wait_for(svc.depends_on)
        started[svc.name] = _start(svc, ctx)
    wait_for(BY_NAME)


def up(s: StackSettings, config_path: Path | None = None, log=print) -> dict:
    """Start the stack (see the module docstring); returns the state written to ``s.state_file``."""
    s.dir.mkdir(parents=True, exist_ok=True)
    running = _running_stack(s, log)
    if running is not None:
        return running
    t_start = time.monotonic()
    ports = assign_ports(s.ports.model_dump())
    for svc in STACK:
        svc.build(s, log)
    state = new_state(s, ports, config_path)
    for d in (s.dir / "logs", s.dir / "config"):
        d.mkdir(parents=True, exist_ok=True)
    write_state(s.state_file, state)
    started: dict[str, Service] = {}
    try:
        _start_all(StackContext(s, state), started, log)
    except BaseException as exc:
        log(f"up failed ({type(exc).__name__}): stopping what was started ...")
        write_state(s.state_file, {**state, "status": "failed"})
        down(s, log=log, quiet=True)
        for proc in started.values():
            proc.proc.poll()   # reap our children
        try:
            exc.stack_stopped = True   # tells the CLI to point at the logs
        except AttributeError:
            pass
        raise
    record_descendants(state)
    state["status"] = "up"
    state["up_s"] = round(time.monotonic() - t_start, 1)
    write_state(s.state_file, state)
    return state


def down(s: StackSettings, log=print, quiet: bool = False) -> bool:
    """Stop every recorded process; True when nothing of the stack is left running."""
    state = read_state(s.state_file)
    if state is None:
        if not quiet:
            log(f"no stack running in {s.dir}")
        return True
    recs = {r["name"]: r for r in state.get("services", [])}
    names = list(reversed(recs))   # the reverse of the recorded start order
    leftovers: dict[str, list] = {}
    for name in names:
        rec = recs[name]
        n = len(members(rec))
        left = stop_service(rec, s.stop_timeout_s, log=log)
        if left:
            leftovers[name] = left
        elif n and not quiet:
            log(f"  {name:13s} stopped (pid {rec['pid']}, process group {rec['pgid']})")
    # verification: nothing of any recorded session / group / descendant list may be alive
    for name in names:
        left = members(recs[name])
        if left:
            leftovers[name] = left
    if leftovers:
        for name, procs in leftovers.items():
            log(f"  {name}: still alive: {', '.join(str(p.pid) for p in procs)}")
        write_state(s.state_file, {**state, "status": "stopping-failed"})
        return False
    shutil.rmtree(state.get("kafka_data_dir") or s.dir / "kafka", ignore_errors=True)
    (s.dir / "scoring.ready").unlink(missing_ok=True)
    stopped = {**state, "status": "stopped", "stopped_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_state(s.dir / STOPPED_FILE, stopped)
    s.state_file.unlink(missing_ok=True)
    if not quiet:
        log(f"stack down: no process left (checked {len(names)} services' pids, process groups, sessions "
            f"and descendants); logs kept in {shown_path(state['logs_dir'])}")
    return True
