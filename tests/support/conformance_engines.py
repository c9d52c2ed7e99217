"""The engine conformance checks as test assertions: services.conformance, run against one engine.

Used by tests/integration/sps_workers/test_engines.py (every engine of sps_workers.ENGINES) and
tests/integration/sps_workers/test_extension_engines.py (a throwaway engine registered the way the
checklist of sps_workers says). The checks themselves are the product's (``crayfish conformance``
runs the same ones on any adapter); each test here runs a group of them and fails with the table:

- :func:`check_scores_dead_letters_and_traces`: the main round (every batch scored, predictions
  equal to the numpy reference, bad records dead-lettered with their reason while the job keeps
  running, stamps, trace context carried, hop spans recorded, a clean stop on SIGTERM);
- :func:`check_mp_instances_in_parallel`: mp > 1 instances really run (outputs from distinct ids);
- :func:`check_scores_through_the_scoring_service`: external serving through our Scoring server;
- :func:`check_registration`: the registry entry points at an importable module and a real environment.
"""

from __future__ import annotations

import importlib.util
import os

from services.conformance.adapters import EngineAdapter
from services.conformance.suite import ROUND_CHECKS, STOP_CHECKS, run_suite, table
from sps_workers import ENGINES, EngineSpec


class EngineStarter:
    """Makes the adapter of a registered engine, started as the runner starts it (with the
    ``engine_options`` its options class names for conformance); :meth:`close` stops them all."""

    def __init__(self, bootstrap: str, models_dir, tmp_path):
        self.bootstrap, self.models_dir, self.tmp_path = bootstrap, models_dir, tmp_path
        self.adapters: list[EngineAdapter] = []

    def adapter(self, engine: str) -> EngineAdapter:
        a = EngineAdapter(self.bootstrap, self.models_dir, self.tmp_path, engine,
                          dict(ENGINES[engine].options.CONFORMANCE_OPTIONS))
        self.adapters.append(a)
        return a

    def close(self) -> None:
        for a in self.adapters:
            a.close()


def _passes(start: EngineStarter, engine: str, checks, **kwargs) -> None:
    results = run_suite(start.adapter(engine), start.bootstrap, start.models_dir, start.tmp_path,
                        only=set(checks), **kwargs)
    assert len(results) == len(checks) and all(r.status == "pass" for r in results), f"{engine}:\n{table(results)}"


def check_scores_dead_letters_and_traces(bootstrap, start: EngineStarter, models_dir, tmp_path, engine: str):
    _passes(start, engine, [*ROUND_CHECKS, *STOP_CHECKS])


def check_mp_instances_in_parallel(bootstrap, start: EngineStarter, engine: str):
    _passes(start, engine, ["mp > 1"])


def check_scores_through_the_scoring_service(bootstrap, start: EngineStarter, models_dir, tmp_path, engine: str):
    _passes(start, engine, ["scoring service"], scoring_service=True)



def check_registration(name: str, spec: EngineSpec, repo_root) -> None:
    """The entry: its own name, an importable module, a real environment, an options class that
    takes its conformance options (its defaults, for most) and rejects an unknown key naming it."""
    assert spec.name == name
    assert importlib.util.find_spec(spec.module) is not None, spec.module
    assert spec.environment == "core" or os.path.isfile(os.path.join(repo_root, "envs", spec.environment,
                                                                     "requirements.txt"))
    spec.check_options(dict(spec.options.CONFORMANCE_OPTIONS), parallelism=1)
    try:
        spec.check_options({"no_such_option": 1})
    except ValueError as exc:
        assert str(exc).startswith(f"engine_options.no_such_option: unknown option of the {name} engine"), exc
    else:
        raise AssertionError(f"{name}: an unknown engine option was accepted")
