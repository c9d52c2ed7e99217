"""``crayfish collector --join RUN_ID``: one collector of a run, on a host of its own.

It finds the run on the join topic, claims a part j of M (``crayfish.run_join``), probes its own
clock skew (its ``collector_receive_ns`` stamps come from this host's clock), reads the output and
dead-letter partitions ``p % M == j`` and says it is ready. While it reads it publishes its progress
(distinct batches seen finished) every ``PROGRESS_S``; the runner, which holds every generator's
sent batches, stops it once the parts together account for all of them (or nothing new came for the
drain time). Then it publishes every record it read (``rows.parquet``), ``lag.parquet`` (part 0
samples the input's backlog) and ``collector.json`` with its host name and part.

The prediction check needs the model's reference on this host (``--models-dir``); without it this
part checks nothing and says why.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

from crayfish.kafka import probe_skew
from crayfish.kafka_client import KafkaClient
from crayfish.run_control import PROGRESS_S, RunControlError
from crayfish.run_join import JoinedRun
from services.collector.collector import Collector, CollectorSettings
from services.generator.joined import Stopped, joined_settings

FILES = ("rows.parquet", "lag.parquet", "collector.json")


def join(run: JoinedRun, bootstrap: str, client: KafkaClient, out_dir: Path, models_dir: Path | None) -> dict:
    """Take part in ``run`` as a collector -> this part's report (``collector.json``)."""
    signalled: list[int] = []
    col: Collector | None = None

    def stop(signum, _frame):
        signalled.append(signum)
        if col is None:
            raise Stopped(f"stopped by signal {signum}")
        col.stop.set()

    signal.signal(signal.SIGTERM, stop)
    try:
        part = run.claim()
        out_dir.mkdir(parents=True, exist_ok=True)
        gs = joined_settings(run.plan, bootstrap, client)
        (out_dir / "generator.json.in").write_text(gs.model_dump_json(indent=2))
        cs = CollectorSettings.model_validate({
            **run.plan["collector"], "bootstrap": bootstrap, "kafka_client": client.model_dump(),
            "expect_file": None, "part": part, "parts": run.parts,
            "generator_settings": str(out_dir / "generator.json.in"),
            "models_dir": str(models_dir) if models_dir else None})
        skew = probe_skew(bootstrap, gs.probe_topic, gs.probes, client=client).to_dict() if gs.probe_topic else None
        col, not_checked = _collector(cs, out_dir, run.host)
        col.on_ready = run.ready
        run.when_stopped(col.stop.set)
        reporter = threading.Thread(target=_report_progress, args=(run, col), daemon=True)
        reporter.start()
        report = col.run()
        reporter.join(timeout=5)
        if signalled:
            raise Stopped(f"stopped by signal {signalled[0]}")
        if run.aborted:
            raise RunControlError(f"run {run.run_id} was aborted by the runner: {run.aborted}")
        report = {**report, "host": run.host, "part": part, "partitions": {"output": col.assigned.get(cs.output_topic, []),
                                                                      "dead_letter": col.assigned.get(cs.dead_letter_topic, [])},
                  "clock_skew": skew, "completed": col.completed}
        if not_checked:
            report["predictions"] = {"checked": 0, "wrong": 0, "note": not_checked}
        (out_dir / "collector.json").write_text(json.dumps(report, indent=2))
        run.publish(report, {name: (out_dir / name).read_bytes() for name in FILES})
        return report
    except BaseException as exc:
        run.fail(str(exc) if isinstance(exc, Stopped) else f"{type(exc).__name__}: {exc}")
        raise


def _collector(cs: CollectorSettings, out_dir: Path, host: str) -> tuple[Collector, str | None]:
    """The collector, and why it checks no prediction when the model's reference is not on this host."""
    try:
        return Collector(cs, out_dir), None
    except Exception as exc:  # noqa: BLE001 - e.g. the model not built under --models-dir here
        why = f"not checked on host {host}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return Collector(cs.model_copy(update={"check_sample": 0.0}), out_dir), why


def _report_progress(run: JoinedRun, col: Collector) -> None:
    while not col.stop.wait(PROGRESS_S):
        try:
            run.progress(col.completed)
        except RunControlError:
            col.stop.set()   # the control topic is gone: the run is over

