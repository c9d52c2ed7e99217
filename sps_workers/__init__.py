"""Stream-processing workers: one folder per engine, all speaking the crayfish.v1 contract.

Every engine does the same job: read DataBatch records from the input topic, score them with the
configured backend, write ScoredBatch records to the output topic and DeadLetter records (with a
reason) to the dead-letter topic; commit input offsets only after the output is delivered.

How to add an engine
--------------------
1. Create ``sps_workers/<engine>/`` with a ``__main__`` that accepts ``--config <json>`` (a
   :class:`sps_workers.settings.WorkerSettings` document) and runs until SIGTERM.
2. Reuse :class:`sps_workers.scoring_op.ScoringOperator` for decode -> validate -> score -> encode,
   so timing stamps and dead-letter reasons mean the same thing in every engine.
3. Register it below: the runner launches ``python -m <module> --config ...`` with the interpreter
   of the engine's environment (``environment``: ``core`` or the name of an environment that
   ``make env-<name>`` builds).
4. Pass the shared conformance tests in ``tests/test_worker_kafka.py`` (parametrize them with the
   new engine).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSpec:
    name: str
    module: str
    environment: str = "core"
    # Whether the engine honours WorkerSettings.consumer_group (the runner waits for assignment).
    joins_consumer_group: bool = True


ENGINES: dict[str, EngineSpec] = {
    "kafka": EngineSpec(name="kafka", module="sps_workers.kafka"),
}
