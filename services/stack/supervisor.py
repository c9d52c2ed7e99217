"""Start, inspect and stop the native stack: local processes, each in a process group (and session)
of its own, health-checked with real calls, recorded in a state file.

``up``   Kafka (KRaft, the jars of services/broker), Jaeger v2 (observability/jaeger), our Scoring
         server, then the stack's topics, the baseline Kafka worker (scoring through that server)
         and the collector. Each is started only after what it needs answers; each is waited for
         with a real check (never a fixed sleep):

         =============  ====================================================================
         jaeger         GET /status of its health extension = 200, and GET /api/services = 200
         kafka          its port accepts connections and an admin metadata call lists a broker
         scoring        the bound port is announced (ready file) and grpc.health.v1 says SERVING
         kafka-worker   its consumer group is Stable with every input partition assigned
         collector      it wrote ``collector.ready`` (partitions assigned)
         =============  ====================================================================

         The state file (``<dir>/stack.json``) is written before the first process starts and
         after each one, so ``down`` can always stop what a failed or interrupted ``up`` left.
``down`` SIGTERM to each process group (collector first, Jaeger last), SIGKILL after
         ``stop_timeout_s``; then scans every process for members of the recorded sessions /
         process groups and the recorded descendants, and fails if any is left. Idempotent.
``ps``   pid, state, listeners and a live health check per service.
``logs`` the tail of each service's log (or of one), optionally following.

Every process gets ``OTEL_SERVICE_NAME`` = its service name (the compose service names) and, except
Jaeger itself, ``OTEL_EXPORTER_OTLP_ENDPOINT`` = the stack's Jaeger (OTLP/gRPC).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import psutil

from crayfish.host import procs as host_procs
from crayfish.host.ports import free_ports, port_free
from crayfish.host.procs import ProcessRecord

from services.stack.settings import HOST, StackSettings

STATE_VERSION = 1
ORDER = ["jaeger", "kafka", "scoring", "kafka-worker", "collector"]   # start order; stopped in reverse
POLL_S = 0.1


class StackError(RuntimeError):
    pass


# --- state file ------------------------------------------------------------------------------

def read_state(state_file: Path) -> dict | None:
    try:
        return json.loads(Path(state_file).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise StackError(f"{state_file}: unreadable state file ({exc}); remove it after checking "
                         f"no stack process is left") from None


def _write_state(state_file: Path, state: dict) -> None:
    tmp = state_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, state_file)


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
    kafka = _service(state, "kafka")
    if kafka is None or host_procs.live(kafka["pid"], kafka["create_time"]) is None:
        raise StackError(f"{p}: the stack's Kafka (pid {kafka and kafka['pid']}) is not running; `make down` "
                         f"then `make up`")
    return dict(state["endpoints"])


def _service(state: dict, name: str) -> dict | None:
    return next((r for r in state.get("services", []) if r["name"] == name), None)


# --- processes -------------------------------------------------------------------------------

def _process_record(rec: dict) -> ProcessRecord:
    return ProcessRecord(rec["pid"], rec["create_time"], rec["sid"], rec["pgid"])


def _known(rec: dict) -> list[tuple[int, float]]:
    return [(c["pid"], c["create_time"]) for c in rec.get("children", [])]


def members(rec: dict) -> list[psutil.Process]:
    """Every live process of a recorded service (:func:`crayfish.host.procs.members`)."""
    return host_procs.members(_process_record(rec), _known(rec))


def stop_service(rec: dict, timeout_s: float, log=print) -> list[psutil.Process]:
    """Stop a recorded service and everything it started (:func:`crayfish.host.procs.stop_tree`);
    returns what is still alive after that (normally nothing)."""
    return host_procs.stop_tree(_process_record(rec), timeout_s, known=_known(rec),
                           log=lambda m: log(f"  {rec['name']}:{m}"))


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




def _assign_ports(wanted: dict[str, int]) -> dict[str, int]:
    """Fixed ports must be free (else StackError naming the setting); 0 gets a distinct free port."""
    taken = [f"ports.{k}={v}" for k, v in wanted.items() if v and not port_free(v, HOST)]
    if taken:
        raise StackError(f"port(s) already in use on {HOST}: {', '.join(taken)} (another stack? `make ps`; "
                         f"or set them to 0 = any free port in compose/native/stack.yaml)")
    fixed = {v for v in wanted.values() if v}
    auto = [k for k, v in wanted.items() if not v]
    picked = iter(p for p in free_ports(len(auto) + len(fixed), HOST) if p not in fixed)
    return {k: v or next(picked) for k, v in wanted.items()}


# --- health checks (used by up and ps) --------------------------------------------------------

def _http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # loopback: never a proxy
    try:
        with opener.open(url, timeout=timeout_s) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def check_jaeger(endpoints: dict) -> str:
    """'' when healthy, else what is wrong."""
    try:
        code, _ = _http_get(endpoints["jaeger_health"])
        if code != 200:
            return f"/status answered {code}"
        code, body = _http_get(endpoints["jaeger_query"] + "/api/services")
        if code != 200 or "data" not in json.loads(body or b"{}"):
            return f"/api/services answered {code}"
        return ""
    except (OSError, ValueError) as exc:
        return f"no answer ({exc})"


def check_kafka(endpoints: dict) -> str:
    from confluent_kafka.admin import AdminClient

    from crayfish.kafka import admin_config

    host, port = endpoints["kafka_bootstrap"].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            pass
        md = AdminClient(admin_config(endpoints["kafka_bootstrap"])).list_topics(timeout=3.0)
        return "" if md.brokers else "metadata lists no broker"
    except Exception as exc:  # noqa: BLE001 - any failure is "not healthy"
        return f"no answer ({exc})"


def check_scoring(endpoints: dict) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(endpoints["scoring"], options=[("grpc.enable_http_proxy", 0)]) as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
        return "" if r.status == health_pb2.HealthCheckResponse.SERVING else \
            f"health {health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)}"
    except grpc.RpcError as exc:
        return f"no answer ({exc.code().name})"


def check_worker(endpoints: dict, group: str, members_: int, partitions: int) -> str:
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    from crayfish.kafka import admin_config

    admin = AdminClient(admin_config(endpoints["kafka_bootstrap"]))   # kept alive until the answer
    try:
        d = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=5)
    except Exception as exc:  # noqa: BLE001
        return f"group {group}: no answer ({exc})"
    assigned = sum(len(m.assignment.topic_partitions) for m in d.members if m.assignment)
    if d.state == ConsumerGroupState.STABLE and len(d.members) >= members_ and assigned >= partitions:
        return ""
    return f"group {group}: {d.state.name.lower()}, {len(d.members)} member(s), {assigned}/{partitions} partitions"


def check_collector(state: dict) -> str:
    return "" if Path(state["collector_ready_file"]).exists() else "collector.ready missing"


def health(state: dict, name: str) -> str:
    ep = state["endpoints"]
    if name == "jaeger":
        return check_jaeger(ep)
    if name == "kafka":
        return check_kafka(ep)
    if name == "scoring":
        return check_scoring(ep)
    if name == "kafka-worker":
        return check_worker(ep, state["consumer_group"], state["worker_parallelism"], state["topics"]["partitions"])
    if name == "collector":
        return check_collector(state)
    return "unknown service"


def _wait_healthy(name: str, check, svc, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        svc.check_alive()
        last = check()
        if not last:
            return
        time.sleep(POLL_S * 2)
    from crayfish.host.procs import ServiceError

    raise ServiceError(f"{name} not healthy after {timeout_s:.0f}s ({last}):\n{svc.log_tail()}")


# --- up ----------------------------------------------------------------------------------------

def _record(svc, ports: list[int], cmd: list[str], extra_logs: list[Path] = ()) -> dict:
    return {"name": svc.name, **svc.record.to_dict(), "cmd": cmd,
            "log": str(svc.log_path), "logs": [str(svc.log_path), *map(str, extra_logs)],
            "ports": ports, "children": []}


def _otel_env(s: StackSettings, otlp: str) -> dict:
    """Standard OTEL_* settings of the stack's services: traces over OTLP/gRPC to the stack's Jaeger."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": str(s.span_export_delay_ms),
            "CRAYFISH_SPANS_DIR": ""}   # spans go to Jaeger, not to span files


def _is_running(state: dict) -> list[str]:
    return [r["name"] for r in state.get("services", []) if members(r)]


def up(s: StackSettings, config_path: Path | None = None, log=print) -> dict:
    """Start the stack (see the module docstring); returns the state written to ``s.state_file``."""
    s.dir.mkdir(parents=True, exist_ok=True)
    old = read_state(s.state_file)
    if old is not None:
        running = _is_running(old)
        if running:
            bad = [n for n in ORDER if _service(old, n) is None
                   or host_procs.live(_service(old, n)["pid"], _service(old, n)["create_time"]) is None or health(old, n)]
            if old.get("status") == "up" and not bad:
                log(f"the stack in {s.dir} is up already")
                return old
            raise StackError(f"a stack in {s.dir} is partly running ({', '.join(running)} alive; "
                             f"unhealthy or missing: {', '.join(bad)}): run `make down` first")
        s.state_file.unlink()   # stale: nothing of it runs any more

    from observability.jaeger.build import CONFIG as JAEGER_CONFIG
    from observability.jaeger.build import ensure_jaeger, is_built
    from services.broker import launcher
    from crayfish.host.envs import python_for
    from crayfish.host.procs import Service, wait_file
    from crayfish.kafka import wait_group_assigned
    from serving.external import backend_env
    from serving.models import build_model, default_models_dir

    t_start = time.monotonic()
    ports = _assign_ports(s.ports.model_dump())
    if not is_built():
        log("building Jaeger from the Go module proxy (first time only; long on a small machine) ...")
    jaeger_bin = ensure_jaeger(log=log)
    launcher.ensure_jars()
    models_dir = default_models_dir()
    build_model(s.model, models_dir)

    logs = s.dir / "logs"
    cfg_dir = s.dir / "config"
    for d in (logs, cfg_dir):
        d.mkdir(parents=True, exist_ok=True)
    otlp = f"http://{HOST}:{ports['jaeger_otlp_grpc']}"
    bootstrap = f"{HOST}:{ports['kafka']}"
    collector_dir = s.dir / "collector"
    state = {
        "version": STATE_VERSION, "status": "starting", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dir": str(s.dir), "config": str(config_path) if config_path else None,
        "state_file": str(s.state_file), "logs_dir": str(logs),
        "endpoints": {
            "kafka_bootstrap": bootstrap,
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
    _write_state(s.state_file, state)
    started: list = []

    def add(svc, rec_ports, cmd, extra_logs=(), main_log=None):
        started.append(svc)
        rec = _record(svc, rec_ports, cmd, extra_logs)
        if main_log is not None:
            rec["log"] = str(main_log)
        state["services"].append(rec)
        _write_state(s.state_file, state)

    try:
        # Jaeger: the trace backend every other service exports to.
        jaeger_env = {"CRAYFISH_JAEGER_OTLP_GRPC": f"{HOST}:{ports['jaeger_otlp_grpc']}",
                      "CRAYFISH_JAEGER_OTLP_HTTP": f"{HOST}:{ports['jaeger_otlp_http']}",
                      "CRAYFISH_JAEGER_QUERY_HTTP": f"{HOST}:{ports['jaeger_query']}",
                      "CRAYFISH_JAEGER_QUERY_GRPC": f"{HOST}:{ports['jaeger_query_grpc']}",
                      "CRAYFISH_JAEGER_HEALTH": f"{HOST}:{ports['jaeger_health']}"}
        args = ["--config", f"file:{JAEGER_CONFIG}"]
        jaeger = Service("jaeger", args, logs / "jaeger.log", python=str(jaeger_bin), env=jaeger_env)
        add(jaeger, [ports[k] for k in ("jaeger_otlp_grpc", "jaeger_otlp_http", "jaeger_query",
                                        "jaeger_query_grpc", "jaeger_health")], [str(jaeger_bin), *args])

        # Kafka: a fresh KRaft log dir each time (removed by down), run as services/broker runs it.
        data = s.dir / "kafka"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        (logs / "kafka.log").write_text("")
        cmd = launcher.kafka_command(data, ports["kafka"], ports["kafka_controller"], s.kafka_heap, logs / "kafka.log")
        kafka = Service("kafka", cmd[1:], logs / "kafka.out", python=cmd[0], env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp})
        # its log: log4j's kafka.log; kafka.out has the JVM's own stdout/stderr
        add(kafka, [ports["kafka"], ports["kafka_controller"]], [cmd[0], "...", *cmd[-2:]],
            extra_logs=[logs / "kafka.log"], main_log=logs / "kafka.log")

        # Our Scoring server (starts while the broker boots).
        ready = s.dir / "scoring.ready"
        ready.unlink(missing_ok=True)
        scoring_cfg = {"host": HOST, "port": ports["scoring"], "models": [s.model], "backend": s.backend,
                       "instances": s.scoring_instances, "models_dir": str(models_dir),
                       "ready_file": str(ready), "service_name": "scoring"}
        (cfg_dir / "scoring.json").write_text(json.dumps(scoring_cfg, indent=2))
        args = ["-m", "serving.scoring", "--config", f"@{cfg_dir / 'scoring.json'}"]
        py = python_for(backend_env(s.backend))
        scoring = Service("scoring", args, logs / "scoring.log", python=py, env=_otel_env(s, otlp))
        add(scoring, [ports["scoring"]], [py, *args])

        _wait_healthy("jaeger", lambda: check_jaeger(state["endpoints"]), jaeger, s.ready_timeout_s)
        log(f"  jaeger        ready  {state['endpoints']['jaeger_query']}  (OTLP {otlp})")
        launcher.wait_ready(bootstrap, s.ready_timeout_s, proc=kafka.proc, log_file=str(logs / "kafka.log"))
        log(f"  kafka         ready  {bootstrap}")
        wait_file(ready, [scoring], s.ready_timeout_s, what="Scoring server")
        _wait_healthy("scoring", lambda: check_scoring(state["endpoints"]), scoring, s.ready_timeout_s)
        log(f"  scoring       ready  {state['endpoints']['scoring']}  (grpc.health.v1 SERVING)")

        # The stack's topics, then the worker and the collector on them.
        from crayfish.kafka import RunTopics, create_topics

        t = s.topics
        create_topics(bootstrap, RunTopics(t.input, t.output, t.dead_letter, t.probe), partitions=t.partitions)
        from sps_workers.settings import ExternalSettings, WorkerSettings

        ws = WorkerSettings(bootstrap=bootstrap, input_topic=t.input, output_topic=t.output,
                            dead_letter_topic=t.dead_letter, consumer_group=s.consumer_group, codec=s.codec,
                            model=s.model, models_dir=str(models_dir), parallelism=s.worker_parallelism,
                            worker_id="kafka",
                            external=ExternalSettings(client="scoring", target=state["endpoints"]["scoring"]))
        (cfg_dir / "kafka-worker.json").write_text(ws.model_dump_json(indent=2))
        args = ["-m", "sps_workers.kafka", "--config", f"@{cfg_dir / 'kafka-worker.json'}"]
        worker = Service("kafka-worker", args, logs / "kafka-worker.log", env=_otel_env(s, otlp))
        add(worker, [], [sys.executable, *args])
        wait_group_assigned(bootstrap, s.consumer_group, s.worker_parallelism, t.partitions, [worker],
                            timeout_s=s.ready_timeout_s)
        log(f"  kafka-worker  ready  group {s.consumer_group}: {t.partitions} partition(s) of {t.input} assigned")

        from services.collector.collector import CollectorSettings

        collector_dir.mkdir(parents=True, exist_ok=True)
        (collector_dir / "collector.ready").unlink(missing_ok=True)
        cs = CollectorSettings(bootstrap=bootstrap, output_topic=t.output, dead_letter_topic=t.dead_letter,
                               input_topic=t.input, worker_group=s.consumer_group,
                               codec=s.codec, expect_file=str(collector_dir / "sent.parquet"), check_sample=0.0)
        (cfg_dir / "collector.json").write_text(cs.model_dump_json(indent=2))
        args = ["-m", "services.collector", "--config", f"@{cfg_dir / 'collector.json'}", "--out", str(collector_dir)]
        collector = Service("collector", args, logs / "collector.log", env=_otel_env(s, otlp))
        add(collector, [], [sys.executable, *args])
        wait_file(collector_dir / "collector.ready", [collector], s.ready_timeout_s, what="collector")
        log(f"  collector     ready  reading {t.output}, {t.dead_letter} -> {collector_dir}")
    except BaseException as exc:
        log(f"up failed ({type(exc).__name__}): stopping what was started ...")
        _write_state(s.state_file, {**state, "status": "failed"})
        down(s, log=log, quiet=True)
        for svc in started:
            svc.proc.poll()   # reap our children
        try:
            exc.stack_stopped = True   # tells the CLI to point at the logs
        except AttributeError:
            pass
        raise

    for rec in state["services"]:   # descendants now (worker instances, ...), for down's checks
        leader = host_procs.live(rec["pid"], rec["create_time"])
        if leader is not None:
            rec["children"] = [{"pid": c.pid, "create_time": c.create_time(), "cmd": " ".join(c.cmdline()[:3])}
                               for c in leader.children(recursive=True)]
    state["status"] = "up"
    state["up_s"] = round(time.monotonic() - t_start, 1)
    _write_state(s.state_file, state)
    return state


def print_up(state: dict, log=print) -> None:
    ep = state["endpoints"]
    rel = _rel
    log(f"\nstack up in {state.get('up_s', 0):.0f} s: {', '.join(r['name'] for r in state['services'])}")
    log(f"  Jaeger query API  {ep['jaeger_query']}/api/services   "
        f"(traces: {ep['jaeger_query']}/api/traces?service=kafka-worker)")
    log(f"  OTLP (gRPC)       {ep['otlp_grpc']}   (OTEL_EXPORTER_OTLP_ENDPOINT)")
    log(f"  Kafka bootstrap   {ep['kafka_bootstrap']}   input topic {state['topics']['input']}")
    log(f"  Scoring gRPC      {ep['scoring']}")
    log(f"  logs              {rel(state['logs_dir'])}/   (make logs [SERVICE=name])")
    log(f"  state file        {rel(state['state_file'])}   (crayfish run FILE.yaml --stack {rel(state['state_file'])})")
    log("  stop with         make down")


def _rel(p: str) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


# --- down --------------------------------------------------------------------------------------

def down(s: StackSettings, log=print, quiet: bool = False) -> bool:
    """Stop every recorded process; True when nothing of the stack is left running."""
    state = read_state(s.state_file)
    if state is None:
        if not quiet:
            log(f"no stack running in {s.dir}")
        return True
    recs = {r["name"]: r for r in state.get("services", [])}
    names = [n for n in reversed(ORDER) if n in recs] + [n for n in recs if n not in ORDER]
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
        _write_state(s.state_file, {**state, "status": "stopping-failed"})
        return False
    shutil.rmtree(state.get("kafka_data_dir") or s.dir / "kafka", ignore_errors=True)
    for f in ("scoring.ready",):
        (s.dir / f).unlink(missing_ok=True)
    stopped = {**state, "status": "stopped", "stopped_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_state(s.dir / "stack.stopped.json", stopped)
    s.state_file.unlink(missing_ok=True)
    if not quiet:
        log(f"stack down: no process left (checked {len(names)} services' pids, process groups, sessions "
            f"and descendants); logs kept in {_rel(state['logs_dir'])}")
    return True


# --- ps / logs ---------------------------------------------------------------------------------

def ps(s: StackSettings, log=print) -> int:
    """Print each service; 0 = up and healthy, 1 = something down or unhealthy, 3 = no stack."""
    state = read_state(s.state_file)
    if state is None:
        last = read_state(s.dir / "stack.stopped.json")
        log(f"no stack running in {_rel(str(s.dir))}" + (f" (last one stopped {last['stopped_at']})" if last else "")
            + "; start one with `make up`")
        return 3
    log(f"stack in {_rel(state['dir'])}: {state['status']} since {state['started_at']}")
    log(f"{'SERVICE':13s} {'PID':>7s} {'PGID':>7s} {'STATE':9s} {'HEALTH':9s} LISTENING")
    ok = True
    problems: list[str] = []
    for name in [n for n in ORDER if _service(state, n)]:
        rec = _service(state, name)
        procs = members(rec)
        leader = host_procs.live(rec["pid"], rec["create_time"])
        st = "gone" if leader is None else leader.status()
        if leader is not None and len(procs) > 1:
            st += f"+{len(procs) - 1}"
        if leader is None:
            h = "down"
        else:
            problem = health(state, name)
            h = "healthy" if not problem else "UNHEALTHY"
            if problem:
                problems.append(f"{name}: {problem}")
        ok = ok and h == "healthy"
        listen = ",".join(listeners(procs)) or "-"
        log(f"{name:13s} {rec['pid']:>7d} {rec['pgid']:>7d} {st:9s} {h:9s} {listen}")
    for p in problems:
        log(f"  {p}")
    ep = state["endpoints"]
    log(f"Jaeger {ep['jaeger_query']}   OTLP {ep['otlp_grpc']}   Kafka {ep['kafka_bootstrap']}   "
        f"Scoring {ep['scoring']}")
    return 0 if ok and state["status"] == "up" else 1


def _log_files(s: StackSettings, service: str | None) -> list[tuple[str, Path]]:
    state = read_state(s.state_file) or read_state(s.dir / "stack.stopped.json")
    files: list[tuple[str, Path]] = []
    if state is not None:
        for rec in state.get("services", []):
            for p in rec.get("logs", [rec["log"]]):
                files.append((rec["name"], Path(p)))
    elif (s.dir / "logs").is_dir():
        files = [(p.stem, p) for p in sorted((s.dir / "logs").glob("*.*"))]
    if service is not None:
        names = sorted({n for n, _ in files})
        files = [(n, p) for n, p in files if n == service]
        if not files:
            raise StackError(f"no logs of {service!r} in {s.dir}; services: {', '.join(names) or 'none'}")
    return files


def logs(s: StackSettings, service: str | None = None, lines: int = 40, follow: bool = False,
         out=sys.stdout) -> None:
    files = _log_files(s, service)
    if not files:
        raise StackError(f"no stack logs in {s.dir}")
    prefix = len({n for n, _ in files}) > 1 or follow
    width = max(len(n) for n, _ in files)
    positions = {}
    for name, path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        positions[path] = len(data)
        tail = data.decode(errors="replace").splitlines()[-lines:] if lines > 0 else []
        if not follow:
            out.write(f"==> {name}: {path} <==\n")
        for line in tail:
            out.write(f"{name:{width}s} | {line}\n" if prefix and follow else line + "\n")
        if not follow and tail:
            out.write("\n")
    out.flush()
    while follow:
        time.sleep(0.3)
        for name, path in files:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            pos = positions.get(path, 0)
            if size < pos:   # truncated: a new `up`
                pos = 0
            if size > pos:
                with open(path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read(size - pos)
                # only whole lines; the rest next round
                cut = chunk.rfind(b"\n") + 1
                if cut == 0:
                    continue
                positions[path] = pos + cut
                for line in chunk[:cut].decode(errors="replace").splitlines():
                    out.write(f"{name:{width}s} | {line}\n")
                out.flush()
