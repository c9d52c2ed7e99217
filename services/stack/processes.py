"""Process bookkeeping of the native stack: a service's record in the state file <-> its live
processes. Finding and stopping a process tree is :mod:`crayfish.host.procs`' job (members,
stop_tree); this module only translates the state file's records for it, lists listeners and
picks the ports."""

from __future__ import annotations

import psutil

from crayfish.host import procs as host_procs
from crayfish.host.ports import free_ports, port_free
from crayfish.host.procs import ProcessRecord, Service
from services.stack.settings import HOST
from services.stack.state import StackError


def _process_record(rec: dict) -> ProcessRecord:
    return ProcessRecord(rec["pid"], rec["create_time"], rec["sid"], rec["pgid"])


def _known(rec: dict) -> list[tuple[int, float]]:
    return [(c["pid"], c["create_time"]) for c in rec.get("children", [])]


def leader(rec: dict) -> psutil.Process | None:
    """The recorded service's own process, if it still runs (pid and start time match)."""
    return host_procs.live(rec["pid"], rec["create_time"])


def members(rec: dict) -> list[psutil.Process]:
    """Every live process of a recorded service (:func:`crayfish.host.procs.members`)."""
    return host_procs.members(_process_record(rec), _known(rec))


def stop_service(rec: dict, timeout_s: float, log=print) -> list[psutil.Process]:
    """Stop a recorded service and everything it started (:func:`crayfish.host.procs.stop_tree`);
    returns what is still alive after that (normally nothing)."""
    return host_procs.stop_tree(_process_record(rec), timeout_s, known=_known(rec),
                                log=lambda m: log(f"  {rec['name']}:{m}"))


def service_record(svc: Service, ports: list[int], cmd: list[str], log: str, logs: list[str]) -> dict:
    """The state file's record of a just-started service (its descendants are added once it is up)."""
    return {"name": svc.name, **svc.record.to_dict(), "cmd": cmd, "log": log, "logs": logs,
            "ports": ports, "children": []}


def record_descendants(state: dict) -> None:
    """Record every service's descendants now (worker instances, ...), for ``down``'s checks."""
    for rec in state["services"]:
        p = leader(rec)
        if p is not None:
            rec["children"] = [{"pid": c.pid, "create_time": c.create_time(), "cmd": " ".join(c.cmdline()[:3])}
                               for c in p.children(recursive=True)]


def listeners(procs: list[psutil.Process]) -> list[str]:
    """``ip:port`` of every listening TCP socket of these processes."""
    out = set()
    for p in procs:
        try:
            conns = p.net_connections(kind="inet")
        except psutil.Error:
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:   # an IPv4-mapped ::ffff:127.0.0.1 (the JVM's) is 127.0.0.1
                out.add(f"{c.laddr.ip.removeprefix('::ffff:')}:{c.laddr.port}")
    return sorted(out, key=lambda a: (a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])))


def assign_ports(wanted: dict[str, int]) -> dict[str, int]:
    """Fixed ports must be free (else StackError naming the setting); 0 gets a distinct free port."""
    taken = [f"ports.{k}={v}" for k, v in wanted.items() if v and not port_free(v, HOST)]
    if taken:
        raise StackError(f"port(s) already in use on {HOST}: {', '.join(taken)} (another stack? `make ps`; "
                         f"or set them to 0 = any free port in compose/native/stack.yaml)")
    fixed = {v for v in wanted.values() if v}
    auto = [k for k, v in wanted.items() if not v]
    picked = iter(p for p in free_ports(len(auto) + len(fixed), HOST) if p not in fixed)
    return {k: v or next(picked) for k, v in wanted.items()}
