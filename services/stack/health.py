"""Health checks of the native stack's services: real calls, never a fixed sleep.

Each check takes the state (:mod:`services.stack.state`) and answers ``""`` when the service is
healthy, else one line saying what is wrong. ``up`` polls a service's check until it passes
(:func:`wait_healthy`); ``ps`` calls each once. A check answers within a few seconds
(:data:`CHECK_TIMEOUT_S`, a little more when a call's own timeout is longer).

A new check: a function ``check_<service>(state) -> str`` here, named in the service's
declaration (:mod:`services.stack.declarations`).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crayfish.host.procs import Service, ServiceError
from crayfish.kafka import wait_group_assigned
from services.broker import launcher

CHECK_TIMEOUT_S = 3.0
POLL_S = 0.2   # between two checks while ``up`` waits


def _http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # loopback: never a proxy
    try:
        with opener.open(url, timeout=timeout_s) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def check_jaeger(state: dict) -> str:
    """GET /status of its health extension = 200, and GET /api/services = 200."""
    ep = state["endpoints"]
    try:
        code, _ = _http_get(ep["jaeger_health"])
        if code != 200:
            return f"/status answered {code}"
        code, body = _http_get(ep["jaeger_query"] + "/api/services")
        if code != 200 or "data" not in json.loads(body or b"{}"):
            return f"/api/services answered {code}"
        return ""
    except (OSError, ValueError) as exc:
        return f"no answer ({exc})"


def check_kafka(state: dict) -> str:
    """Its port accepts connections and an admin metadata call lists a broker (the check every
    broker start of this project waits for: :func:`services.broker.launcher.wait_ready`)."""
    try:
        launcher.wait_ready(state["endpoints"]["kafka_bootstrap"], timeout_s=CHECK_TIMEOUT_S)
        return ""
    except Exception as exc:  # noqa: BLE001 - any failure is "not healthy"
        return f"no answer ({exc})"


def check_scoring(state: dict) -> str:
    """It announced its bound port (``scoring.ready``) and grpc.health.v1 says SERVING for the
    whole server (every served model loaded and warm)."""
    if not (Path(state["dir"]) / "scoring.ready").exists():
        return "scoring.ready missing"
    try:
        with grpc.insecure_channel(state["endpoints"]["scoring"], options=[("grpc.enable_http_proxy", 0)]) as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""),
                                                     timeout=CHECK_TIMEOUT_S)
    except grpc.RpcError as exc:
        return f"no answer ({exc.code().name})"
    if r.status != health_pb2.HealthCheckResponse.SERVING:
        return f"health {health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)}"
    return ""


def check_worker(state: dict) -> str:
    """Its consumer group is Stable, with every worker process a member and every input partition
    assigned (what the runner waits for: :func:`crayfish.kafka.wait_group_assigned`)."""
    try:
        wait_group_assigned(state["endpoints"]["kafka_bootstrap"], state["consumer_group"],
                            state["worker_parallelism"], state["topics"]["partitions"],
                            timeout_s=CHECK_TIMEOUT_S)
        return ""
    except Exception as exc:  # noqa: BLE001 - any failure is "not healthy"
        return str(exc)


def check_collector(state: dict) -> str:
    """It wrote ``collector.ready`` (its partitions are assigned)."""
    return "" if Path(state["collector_ready_file"]).exists() else "collector.ready missing"


def wait_healthy(name: str, check: Callable[[], str], svc: Service, timeout_s: float) -> None:
    """Poll ``check`` until it answers ``""``; fail early when ``svc`` exits, and after
    ``timeout_s`` with the last problem and the tail of its log."""
    deadline = time.monotonic() + timeout_s
    problem = "not checked"
    while time.monotonic() < deadline:
        svc.check_alive()
        problem = check()
        if not problem:
            return
        time.sleep(POLL_S)
    raise ServiceError(f"{name} not healthy after {timeout_s:.0f}s ({problem}):\n{svc.log_tail()}")
