"""The adapter under test: started the way the runner starts an engine, or found already running.

:class:`EngineAdapter` starts a registered engine (``command`` included, with its
``engine_options``) on fresh topics, as the runner does: its environment's interpreter, readiness
by consumer group or ready file. :class:`ExternalAdapter` starts nothing: it is a pipeline that
already reads and writes topics the user named.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from crayfish.host.envs import python_for
from crayfish.host.procs import Service
from crayfish.kafka import RunTopics, create_topics, delete_topics
from sps_workers import ENGINES
from sps_workers.settings import ExternalSettings, WorkerSettings

MODEL = "ffnn"


@dataclass
class Started:
    """One start of the adapter: its topics, the id its batches carry, its process (None: external)."""

    topics: RunTopics
    run_id: str
    service: Service | None
    expected_engine: str | None   # what ScoringFacts.engine must say (None: anything non-empty)


@dataclass
class EngineAdapter:
    """A registered engine, started by this suite on fresh topics; :meth:`close` stops every start
    and drops its topics."""

    bootstrap: str
    models_dir: Path
    workdir: Path
    engine: str
    engine_options: dict = field(default_factory=dict)
    ready_timeout_s: float = 240.0
    starts: list[Started] = field(default_factory=list)

    starts_processes = True

    @property
    def name(self) -> str:
        return self.engine

    def start(self, parallelism: int = 1, partitions: int = 2, external: ExternalSettings | None = None,
              env: dict | None = None) -> Started:
        spec = ENGINES[self.engine]
        run_id = uuid.uuid4().hex[:8]
        topics = RunTopics.for_run(run_id)
        create_topics(self.bootstrap, topics, partitions=partitions)
        ws = WorkerSettings(bootstrap=self.bootstrap, input_topic=topics.input, output_topic=topics.output,
                            dead_letter_topic=topics.dead_letter, consumer_group=f"w-{run_id}",
                            model=MODEL, models_dir=str(self.models_dir), parallelism=parallelism,
                            worker_id=self.engine, external=external, engine_options=self.engine_options,
                            ready_file=str(self.workdir / f"worker-{run_id}.ready"))
        cfg = self.workdir / f"worker-{run_id}.json"
        cfg.write_text(ws.model_dump_json())
        svc = Service(f"{self.engine}-worker", ["-m", spec.module, "--config", f"@{cfg}"],
                      self.workdir / f"worker-{run_id}.log", python=python_for(spec.environment), env=env)
        started = Started(topics, run_id, svc, None if self.engine == "command" else self.engine)
        self.starts.append(started)
        spec.wait_ready(ws, partitions, [svc], timeout_s=self.ready_timeout_s)
        return started

    def close(self) -> None:
        for s in self.starts:
            s.service.stop()
            delete_topics(self.bootstrap, s.topics)
        self.starts.clear()


@dataclass
class ExternalAdapter:
    """A pipeline that already runs, reading ``input`` and writing ``output`` / ``dead_letter``."""

    bootstrap: str
    input: str
    output: str
    dead_letter: str

    starts_processes = False
    name = "external"

    def start(self, parallelism: int = 1, partitions: int = 2, external=None, env=None) -> Started:
        run_id = uuid.uuid4().hex[:8]
        return Started(RunTopics(self.input, self.output, self.dead_letter, ""), run_id, None, None)

    def close(self) -> None:
        pass
