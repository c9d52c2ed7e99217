"""The engine conformance suite: every stream processor in sps_workers.ENGINES, against the real broker.

Each engine runs for real in its own environment (built on demand and cached) and must pass the
checks of tests/support/conformance_engines.py:
- score every batch, with predictions equal to the numpy reference, full accounting;
- dead-letter malformed records with their reason and keep running (good records after them scored);
- carry the W3C trace context of a sampled batch to its output and record the worker's hop spans;
- really run mp > 1 instances in parallel (outputs come from distinct task/thread/actor ids);
- score through the external Scoring service as well as embedded ONNX.

A new engine passes this file unchanged once it is registered in sps_workers.ENGINES
(tests/integration/sps_workers/test_extension_engines.py proves it with a throwaway engine).
"""

from __future__ import annotations

import threading

import pyarrow.parquet as pq
import pytest

from crayfish.host.paths import REPO_ROOT
from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment
from sps_workers import ENGINES
from sps_workers.runtime import mark_ready
from sps_workers.settings import WorkerSettings
from tests.support.conformance_engines import (
    EngineStarter,
    check_mp_instances_in_parallel,
    check_registration,
    check_scores_dead_letters_and_traces,
    check_scores_through_the_scoring_service,
)

ALL_ENGINES = sorted(ENGINES)


@pytest.fixture
def engine_factory(kafka_bootstrap, models_dir, tmp_path):
    """Start an engine's worker as the runner does, on fresh topics; stopped after the test."""
    starter = EngineStarter(kafka_bootstrap, models_dir, tmp_path)
    yield starter
    starter.close()


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_engine_scores_dead_letters_and_traces(kafka_bootstrap, engine_factory, models_dir, tmp_path, engine):
    check_scores_dead_letters_and_traces(kafka_bootstrap, engine_factory, models_dir, tmp_path, engine)


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_engine_runs_mp_instances_in_parallel(kafka_bootstrap, engine_factory, engine):
    check_mp_instances_in_parallel(kafka_bootstrap, engine_factory, engine)


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_engine_scores_through_the_scoring_service(kafka_bootstrap, engine_factory, models_dir, tmp_path, engine):
    check_scores_through_the_scoring_service(kafka_bootstrap, engine_factory, models_dir, tmp_path, engine)


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_every_engine_is_registered_with_a_module_an_environment_and_options(engine):
    check_registration(engine, ENGINES[engine], REPO_ROOT)


def test_runner_runs_a_non_core_engine_through_an_external_server(kafka_bootstrap, models_dir, tmp_path):
    """`crayfish run` with an engine that has its own environment and external serving: the worker
    runs in the engine's environment (not the client's) and every batch is scored by the server."""
    exp = Experiment.model_validate({
        "name": "engine-ext", "model": "ffnn", "engine": "bytewax", "kafka": {"bootstrap": kafka_bootstrap},
        "serving": {"kind": "external", "server": "scoring"},
        "workload": {"type": "constant", "rate": 50, "duration_s": 2},
        "validity": {"min_duration_s": 1, "min_count": 20}})
    point = run_experiment(exp, tmp_path / "run", models_dir=models_dir)["points"][0]
    assert point["accounting"]["scored"] == point["accounting"]["sent"] == 100
    assert point["answered_by"] == ["crayfish-scoring"]
    # Bytewax commits no group offsets: sustainability is judged on the backlog, not on commits.
    lag = pq.read_table(next((tmp_path / "run").glob("points/*/rep-0/lag.parquet"))).to_pydict()
    assert lag["lag"] and set(lag["committed_lag"]) == {-1}


def test_ready_file_written_by_many_instances_at_once(tmp_path):
    """Every parallel instance may mark the pipeline ready at the same moment; none may fail."""
    ws = WorkerSettings(bootstrap="127.0.0.1:9", input_topic="i", output_topic="o", dead_letter_topic="d",
                        consumer_group="g", model="ffnn", ready_file=str(tmp_path / "worker.ready"))
    errors = []

    def mark():
        try:
            for _ in range(50):
                mark_ready(ws)
        except Exception as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    threads = [threading.Thread(target=mark) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert (tmp_path / "worker.ready").read_text() == "ready\n"
    assert [p.name for p in tmp_path.iterdir()] == ["worker.ready"]
