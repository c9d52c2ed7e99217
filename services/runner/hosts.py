"""A point whose generators and collectors join from other hosts (experiment ``hosts``, docs/clusters.md, "Load from several hosts").

The runner starts no generator and no collector for such a point. It creates the run's control topic,
announces the run on the join topic (the plan: both settings, how many of each), logs one join command
per role, and then, over the control topic (protocol: ``crayfish.run_control``):

1. waits until every part is claimed and ready (``hosts.join_timeout_s``; else the point fails in one
   line saying how many joined);
2. sends ``start`` with the schedule's origin ``START_LEAD_NS`` ahead: every generator sends its share
   of the one schedule from that instant;
3. waits for every generator's result (its sent.parquet and generator.json), merges the sent batches;
4. sends ``stop`` once the collectors' progress together covers every sent batch, or nothing new came
   for ``drain_idle_s``; waits for every collector's result;
5. writes the merged files into the point folder (``services.runner.hosts_merge``) and each part's
   own files under ``hosts/<role>-<part>-<host>/``.

A part that fails (or is stopped) fails the point; the runner then sends ``abort`` so that the others
exit. The run is marked ended on the join topic in every case, and the control topic deleted.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from crayfish.kafka import RunTopics, delete_topics
from crayfish.kafka_client import KafkaClient
from crayfish.run_control import (
    ControlChannel,
    FileChunks,
    RunControlError,
    announce,
    assign_parts,
    control_topic,
    ensure_topic,
    mark_ended,
)
from services.collector.collector import CollectorSettings
from services.generator.settings import GeneratorSettings
from services.runner.hosts_merge import (
    merge_batches,
    merge_collector_reports,
    merge_generator_reports,
    merge_lag,
    merge_rows,
    merge_sent,
)

START_LEAD_NS = 3_000_000_000   # the schedule starts this long after the start is sent
RESULT_TIMEOUT_S = 120.0        # for the collectors' results once they were stopped


def joins_from_hosts(exp) -> bool:
    """Whether a point of ``exp`` has its generators and collectors join from other hosts."""
    return exp.hosts.generators > 1 or exp.hosts.collectors > 1


def join_commands(run_id: str, bootstrap: str, client: KafkaClient) -> list[str]:
    extra = f" --client-file {client.properties_file}" if client.properties_file else ""
    return [f"crayfish {role} --join {run_id} --bootstrap {bootstrap}{extra} --host NAME"
            for role in ("generator", "collector")]


class _Parts:
    """What the control topic said so far: claims (-> who has which part), readiness, progress,
    results with their files. A part's ``error`` fails the point."""

    def __init__(self, channel: ControlChannel, wanted: dict[str, int], check_alive: Callable[[], None]):
        self.channel, self.wanted, self.check_alive = channel, wanted, check_alive
        self.claims: list = []
        self.roster: dict[str, tuple[str, int]] = {}
        self.ready: set[str] = set()
        self.progress: dict[str, int] = {}
        self.results: dict[str, tuple[dict, dict[str, bytes]]] = {}
        self.chunks = FileChunks()

    def count(self, role: str, among=None) -> int:
        return sum(1 for m, (r, _) in self.roster.items() if r == role and (among is None or m in among))

    def all_in(self, among) -> bool:
        return all(self.count(role, among) == n for role, n in self.wanted.items())

    def of(self, role: str) -> list[tuple[dict, dict[str, bytes]]]:
        """The results of ``role`` in part order."""
        return sorted((res for m, res in self.results.items() if self.roster[m][0] == role), key=lambda r: r[0]["part"])

    def pump(self, timeout_s: float = 0.2) -> None:
        self.check_alive()
        for m in self.channel.poll(timeout_s):
            member = m.get("member")
            if m.kind == "claim":
                self.claims.append(m)
                self.roster = assign_parts(self.claims, self.wanted)
            elif member not in self.roster:
                continue   # an extra process, told no by the claims' order
            elif m.kind == "ready":
                self.ready.add(member)
            elif m.kind == "progress":
                self.progress[member] = int(m["completed"])
            elif m.kind == "file":
                self.chunks.add(m)
            elif m.kind == "result":
                self.results[member] = ({**m["report"], "host": m["host"], "part": m["part"]},
                                        self.chunks.files(member, m["files"]))
            elif m.kind == "error":
                role, part = self.roster[member]
                raise RuntimeError(f"{role} {part} on host {m.get('host')} failed: {m.get('error')}")

    def wait(self, done: Callable[[], bool], timeout_s: float, failure: Callable[[], str]) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(failure())
            self.pump()


def run_joined(bootstrap: str, client: KafkaClient, exp, run_id: str, topics: RunTopics, gs: GeneratorSettings,
               cs: CollectorSettings, point_dir: Path, *, check_alive: Callable[[], None], budget_s: float,
               timings: dict, log: Callable[[str], None] = print) -> None:
    """Run the point's generators and collectors on the hosts that join it (module docstring); the
    merged files land in ``point_dir``."""
    hc = exp.hosts
    wanted = {"generator": hc.generators, "collector": hc.collectors}
    control = control_topic(run_id)
    ensure_topic(bootstrap, client, control, exp.kafka.replication_factor, exp.kafka.topic_configs)
    channel = ControlChannel(bootstrap, client, control)
    parts = _Parts(channel, wanted, check_alive)
    ended = ""
    try:
        announce(bootstrap, client, {"run_id": run_id, "experiment": exp.name, "control_topic": control,
                                     "generators": hc.generators, "collectors": hc.collectors,
                                     "join_timeout_s": hc.join_timeout_s, "generator": gs.model_dump(mode="json"),
                                     "collector": cs.model_dump(mode="json")},
                 exp.kafka.replication_factor, exp.kafka.topic_configs)
        commands = join_commands(run_id, bootstrap, client)
        (point_dir / "join.txt").write_text("\n".join(commands) + "\n")
        log(f"run {run_id} waits for {hc.generators} generator(s) and {hc.collectors} collector(s) to join:")
        for c in commands:
            log(f"  {c}")
        t = time.monotonic()
        parts.wait(lambda: parts.all_in(parts.ready), hc.join_timeout_s, lambda: (
            f"hosts: {parts.count('generator')} of {hc.generators} generator(s) and {parts.count('collector')} of "
            f"{hc.collectors} collector(s) joined run {run_id} within {hc.join_timeout_s:g} s "
            f"(join commands: {point_dir / 'join.txt'})"))
        timings["hosts_joined_s"] = time.monotonic() - t
        t = time.monotonic()
        channel.send("start", start_at_ns=time.time_ns() + START_LEAD_NS)
        parts.wait(lambda: parts.count("generator", parts.results) == hc.generators, budget_s,
                   lambda: f"hosts: {parts.count('generator', parts.results)} of {hc.generators} generator(s) "
                           f"finished within {budget_s:.0f} s")
        timings["generator_s"] = time.monotonic() - t
        t = time.monotonic()
        sent = _write_sent(point_dir, parts.of("generator"))
        _drain(parts, sent.num_rows, cs.drain_idle_s)
        channel.send("stop")
        parts.wait(lambda: parts.count("collector", parts.results) == hc.collectors, RESULT_TIMEOUT_S,
                   lambda: f"hosts: {parts.count('collector', parts.results)} of {hc.collectors} collector(s) "
                           f"published their records within {RESULT_TIMEOUT_S:.0f} s of the stop")
        _write_collected(point_dir, sent, parts.of("collector"))
        timings["drain_s"] = time.monotonic() - t
    except BaseException as exc:
        ended = f"failed: {exc}".splitlines()[0][:300]
        try:
            channel.send("abort", reason=ended)
        except RunControlError:
            pass
        raise
    finally:
        channel.close()
        try:
            mark_ended(bootstrap, client, run_id, ended)
        except RunControlError:
            pass   # best effort: the point's own outcome is what the caller hears
        delete_topics(bootstrap, topics, only=[control], client=client)


def _drain(parts: _Parts, expected: int, idle_s: float) -> None:
    """Until the collectors together saw ``expected`` batches finished, or their sum stood still
    for ``idle_s``."""
    last, since = -1, time.monotonic()
    while True:
        total = sum(parts.progress.values())
        if total >= expected:
            return
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since > idle_s:
            return
        parts.pump()


def _part_dir(point_dir: Path, role: str, report: dict) -> Path:
    d = point_dir / "hosts" / f"{role}-{report['part']}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', report['host'])}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _keep(point_dir: Path, role: str, results) -> None:
    for report, files in results:
        d = _part_dir(point_dir, role, report)
        for name, data in files.items():
            (d / name).write_bytes(data)


def _table(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def _write_sent(point_dir: Path, results) -> pa.Table:
    _keep(point_dir, "generator", results)
    sent = merge_sent([(report, _table(files["sent.parquet"])) for report, files in results])
    pq.write_table(sent, point_dir / "sent.parquet")
    report = merge_generator_reports([r for r, _ in results], sent)
    (point_dir / "generator.json").write_text(json.dumps(report, indent=2))
    return sent


def _write_collected(point_dir: Path, sent: pa.Table, results) -> None:
    _keep(point_dir, "collector", results)
    rows = merge_rows([(report, _table(files["rows.parquet"])) for report, files in results])
    table = merge_batches(sent, rows)
    pq.write_table(table, point_dir / "batches.parquet")
    part0 = next((files["lag.parquet"] for report, files in results if report["part"] == 0), None)
    lag = merge_lag(_table(part0) if part0 else None, rows)
    pq.write_table(lag, point_dir / "lag.parquet")
    report = merge_collector_reports([r for r, _ in results], table, lag)
    (point_dir / "collector.json").write_text(json.dumps(report, indent=2))
