"""What processes listen on: the check behind "every listener binds 127.0.0.1" in the engine tests."""

from __future__ import annotations

import ipaddress

import psutil


def listening(pid: int, tree: bool = True) -> list:
    """Local addresses (``ip``, ``port``) of every TCP socket in LISTEN state of ``pid`` (and,
    with ``tree``, of all its descendants)."""
    root = psutil.Process(pid)
    found = []
    for p in [root, *(root.children(recursive=True) if tree else [])]:
        try:
            found += [c.laddr for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            pass
    return found


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback address (``::ffff:127.0.0.1``, how a JVM's
    dual-stack socket bound to 127.0.0.1 shows)."""
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


def loopback_listeners(pid: int, tree: bool = True, at_least: int = 1) -> list:
    """The listening addresses of ``pid`` (and its tree), after asserting that there are at least
    ``at_least`` of them and that every one is loopback. A check that passes when nothing listens
    proves nothing, so an empty list fails here."""
    found = listening(pid, tree=tree)
    assert len(found) >= at_least, f"expected >= {at_least} listening socket(s) under pid {pid}, found {found}"
    outside = [a for a in found if not is_loopback(a.ip)]
    assert not outside, f"listening beyond loopback: {outside} (all: {found})"
    return found
