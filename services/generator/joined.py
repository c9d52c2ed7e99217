"""``crayfish generator --join RUN_ID``: one generator of a run, on a host of its own.

It finds the run on the join topic, claims a part (``crayfish.run_join``), probes its own clock
skew, says it is ready, and sends its share of the schedule (the sequences ``part, part + N, ...``)
from the origin the runner's start gives. Then it publishes its ``sent.parquet`` and
``generator.json`` (with its host name and part) on the run's control topic; the runner merges the
parts. Its files stay in ``out_dir`` too.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from crayfish.kafka_client import KafkaClient
from crayfish.run_join import JoinedRun
from services.generator.generator import Share
from services.generator.generator import run as run_generator
from services.generator.settings import GeneratorSettings


class Stopped(Exception):
    """SIGTERM, or the runner's abort: the process ends with one line."""


def joined_settings(plan: dict, bootstrap: str, client: KafkaClient) -> GeneratorSettings:
    """The plan's generator settings with this host's way to the cluster."""
    return GeneratorSettings.model_validate({**plan["generator"], "bootstrap": bootstrap,
                                             "kafka_client": client.model_dump()})


def join(run: JoinedRun, bootstrap: str, client: KafkaClient, out_dir: Path) -> dict:
    """Take part in ``run`` as a generator -> this part's report (``generator.json``)."""
    def stop(signum, _frame):
        raise Stopped(f"run {run.run_id} was aborted by the runner: {run.aborted}" if run.aborted
                      else f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    try:
        s = joined_settings(run.plan, bootstrap, client)
        part = run.claim()
        out_dir.mkdir(parents=True, exist_ok=True)

        def await_start() -> int:
            run.ready()
            origin = run.wait_start()
            # while sending, the runner's abort interrupts like a SIGTERM (the waits above return on it)
            run.on_abort = lambda: os.kill(os.getpid(), signal.SIGTERM)
            return origin

        report = {**run_generator(s, out_dir, share=Share(part, run.parts), await_start=await_start),
                  "host": run.host, "part": part}
        (out_dir / "generator.json").write_text(json.dumps(report, indent=2))
        run.on_abort = lambda: None   # done sending: an abort now fails the publishing instead
        run.publish(report, {"sent.parquet": (out_dir / "sent.parquet").read_bytes(),
                             "generator.json": (out_dir / "generator.json").read_bytes()})
        return report
    except BaseException as exc:
        run.fail(f"{type(exc).__name__}: {exc}" if not isinstance(exc, Stopped) else str(exc))
        raise
