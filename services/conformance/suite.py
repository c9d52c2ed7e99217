"""Run the checks that apply to an adapter; one :class:`Result` per check, never an exception."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.conformance import checks

PASS, FAIL, NOT_APPLICABLE = "pass", "FAIL", "n/a"

# Judged on the main round's observation, in this order.
ROUND_CHECKS = {
    "accounting": checks.accounting,
    "dead letters": checks.dead_letters,
    "keeps scoring": checks.keeps_scoring,
    "predictions": checks.predictions,
    "stamps": checks.stamps,
    "trace context": checks.trace_context,
}
# Need the adapter's own process: judged after the suite stopped it.
STOP_CHECKS = {"clean stop": checks.clean_stop, "hop spans": checks.hop_spans}
# Need a start of their own.
OWN_START_CHECKS = {"mp > 1": checks.parallel_instances, "scoring service": checks.scoring_service}


@dataclass(frozen=True)
class Result:
    check: str
    status: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.status != FAIL


def run_suite(adapter, bootstrap: str, models_dir: Path, workdir: Path, *, timeout_s: float = 120.0,
              scoring_service: bool = False, only: set[str] | None = None) -> list[Result]:
    """Every check against ``adapter`` (:mod:`services.conformance.adapters`); ``only``: a subset."""
    wanted = lambda name: only is None or name in only
    results: list[Result] = []
    round_names = [n for n in [*ROUND_CHECKS, *STOP_CHECKS] if wanted(n)]
    if round_names:
        results += _main_round(adapter, bootstrap, models_dir, workdir, timeout_s, round_names)
    for name, check in OWN_START_CHECKS.items():
        if not wanted(name):
            continue
        if not adapter.starts_processes:
            results.append(Result(name, NOT_APPLICABLE, "the suite does not start an external pipeline"))
        elif name == "scoring service" and not scoring_service:
            results.append(Result(name, NOT_APPLICABLE, "not asked for (--scoring-service)"))
        else:
            results.append(_judge(name, check, adapter=adapter, bootstrap=bootstrap, models_dir=models_dir,
                                  workdir=workdir, timeout_s=timeout_s))
            adapter.close()
    adapter.close()
    return results


def _main_round(adapter, bootstrap, models_dir, workdir, timeout_s, names) -> list[Result]:
    spans_dir = workdir / "spans"
    env = {"CRAYFISH_SPANS_DIR": str(spans_dir), "OTEL_TRACES_SAMPLER": "parentbased_always_off"}
    try:
        started = adapter.start(env=env)
    except Exception as exc:  # noqa: BLE001 - a start that fails is every check's verdict, in one line
        return [Result(n, FAIL, f"did not start: {_gist(exc)}") for n in names]
    obs = checks.observe(bootstrap, started, timeout_s)
    if started.service is not None:
        obs.exit_code = started.service.stop()
        checks.read_spans_after_stop(obs, spans_dir)
    out = []
    for name in names:
        if name in STOP_CHECKS and started.service is None:
            out.append(Result(name, NOT_APPLICABLE, "the pipeline is not the suite's to stop"))
            continue
        check = ROUND_CHECKS.get(name) or STOP_CHECKS[name]
        out.append(_judge(name, check, obs=obs, models_dir=models_dir, expected_engine=started.expected_engine))
    return out


def _judge(name: str, check, **kwargs) -> Result:
    try:
        return Result(name, PASS, check(**kwargs))
    except checks.CheckFailed as exc:
        return Result(name, FAIL, str(exc))
    except Exception as exc:  # noqa: BLE001 - the table names what went wrong instead of a traceback
        return Result(name, FAIL, _gist(exc))


def _gist(exc: Exception) -> str:
    """One line: the error's first line, and the last line of a log tail it carries."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def table(results: list[Result]) -> str:
    width = max(len(r.check) for r in results)
    lines = [f"{'check':<{width}}  result  detail"]
    lines += [f"{r.check:<{width}}  {r.status:<6}  {r.detail}" for r in results]
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed}/{len(results)} passed or not applicable; {failed} failed")
    return "\n".join(lines)
