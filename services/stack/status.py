"""What the native stack tells its user: ``ps`` (each service's pid, state, health, listeners) and
the summary ``up`` prints."""

from __future__ import annotations

from pathlib import Path

from services.stack.declarations import STACK, StackService
from services.stack.processes import leader, listeners, members
from services.stack.settings import StackSettings
from services.stack.state import STOPPED_FILE, find_service, read_state


def shown_path(p: str | Path) -> str:
    """``p`` relative to the current folder when it is inside it (shorter to read and to type)."""
    try:
        return str(Path(p).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _service_line(state: dict, svc: StackService) -> tuple[str, bool, str]:
    """One ``ps`` line of a recorded service, whether it is healthy, and its health problem ('' when
    healthy or down)."""
    rec = find_service(state, svc.name)
    procs = members(rec)
    lead = leader(rec)
    problem = ""
    if lead is None:
        st, h = "gone", "down"
    else:
        st = lead.status() + (f"+{len(procs) - 1}" if len(procs) > 1 else "")
        problem = svc.health(state)
        h = "UNHEALTHY" if problem else "healthy"
    listen = ",".join(listeners(procs)) or "-"
    return f"{svc.name:13s} {rec['pid']:>7d} {rec['pgid']:>7d} {st:9s} {h:9s} {listen}", h == "healthy", problem


def ps(s: StackSettings, log=print) -> int:
    """Print each service; 0 = up and healthy, 1 = something down or unhealthy, 3 = no stack."""
    state = read_state(s.state_file)
    if state is None:
        last = read_state(s.dir / STOPPED_FILE)
        log(f"no stack running in {shown_path(s.dir)}" + (f" (last one stopped {last['stopped_at']})" if last else "")
            + "; start one with `make up`")
        return 3
    log(f"stack in {shown_path(state['dir'])}: {state['status']} since {state['started_at']}")
    log(f"{'SERVICE':13s} {'PID':>7s} {'PGID':>7s} {'STATE':9s} {'HEALTH':9s} LISTENING")
    ok = True
    problems: list[str] = []
    for svc in STACK:
        if find_service(state, svc.name) is None:
            continue
        line, healthy, problem = _service_line(state, svc)
        log(line)
        ok = ok and healthy
        if problem:
            problems.append(f"{svc.name}: {problem}")
    for p in problems:
        log(f"  {p}")
    ep = state["endpoints"]
    log(f"Jaeger {ep['jaeger_query']}   OTLP {ep['otlp_grpc']}   Kafka {ep['kafka_bootstrap']}   "
        f"Scoring {ep['scoring']}")
    return 0 if ok and state["status"] == "up" else 1


def print_up(state: dict, log=print) -> None:
    """The summary after ``up``: where to look, what to type next."""
    ep = state["endpoints"]
    log(f"\nstack up in {state.get('up_s', 0):.0f} s: {', '.join(r['name'] for r in state['services'])}")
    log(f"  Jaeger query API  {ep['jaeger_query']}/api/services   "
        f"(traces: {ep['jaeger_query']}/api/traces?service=kafka-worker)")
    log(f"  OTLP (gRPC)       {ep['otlp_grpc']}   (OTEL_EXPORTER_OTLP_ENDPOINT)")
    log(f"  Kafka bootstrap   {ep['kafka_bootstrap']}   input topic {state['topics']['input']}")
    log(f"  Scoring gRPC      {ep['scoring']}")
    log(f"  logs              {shown_path(state['logs_dir'])}/   (make logs [SERVICE=name])")
    log(f"  state file        {shown_path(state['state_file'])}   "
        f"(crayfish run FILE.yaml --stack {shown_path(state['state_file'])})")
    log("  stop with         make down")
