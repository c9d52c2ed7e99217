"""End-to-end runs through the real broker: accounting, stamps, results folder, calibration."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment

STATS = {"p50", "p90", "p95", "p99", "p999", "max", "mean"}


def _exp(kafka_bootstrap, **fields) -> Experiment:
    base = {"name": "t", "model": "ffnn", "engine": "kafka", "kafka": {"bootstrap": kafka_bootstrap},
            "validity": {"min_duration_s": 1, "min_count": 20}}
    base.update(fields)
    return Experiment.model_validate(base)


def test_open_loop_run_accounts_for_every_batch(kafka_bootstrap, models_dir, tmp_path):
    exp = _exp(kafka_bootstrap, workload={"type": "constant", "rate": 100, "duration_s": 4},
               check_predictions=0.1)
    summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)

    point = summary["points"][0]
    checked = point["accounting"].pop("checked")
    assert point["accounting"] == {"sent": 400, "scored": 400, "dead_lettered": 0, "missing": 0,
                                   "duplicates": 0, "not_sent": 0, "unmatched": 0, "wrong": 0}
    assert 15 <= checked <= 70  # ~10 % of 400, by a hash of the batch id
    assert set(point["latency_ms"]) >= STATS and set(point["latency_from_schedule_ms"]) >= STATS
    assert point["valid"], point["reasons"]
    assert 90 <= point["throughput_bps"] <= 110
    # Files of the run folder
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["points"][0]["accounting"]["scored"] == 400
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["experiment"]["workload"]["rate"] == 100
    assert manifest["versions"]["onnxruntime"] and manifest["host"]["cpu_count"]
    skew = manifest["points"][0]["clock_skew_ms"]
    assert skew["lower_ms"] <= 0.0 <= skew["upper_ms"], skew   # one host: one clock
    assert point["clock_skew_ms"] == skew and skew["probes"] == 10
    # One record per batch, stamps in causal order (broker stamps are ms, truncated).
    t = pq.read_table(tmp_path / "run" / "batches.parquet").to_pydict()
    assert len(t["batch_id"]) == 400 and len(set(t["batch_id"])) == 400
    created = np.array(t["created_ns"]) / 1e6
    inp, out = np.array(t["input_append_ms"]), np.array(t["output_append_ms"])
    recv, send = np.array(t["worker_receive_ns"]) / 1e6, np.array(t["worker_send_ns"]) / 1e6
    slack = 1 + abs(skew["lower_ms"]) + abs(skew["upper_ms"])
    assert (inp + slack >= created).all()
    assert (recv + slack >= inp).all()
    assert (send >= recv).all()
    assert (out + slack >= send).all()
    assert (np.array(t["intended_ns"]) > 0).all()
    assert set(t["backend"]) == {"onnxruntime"}


def test_sleep_scorer_delay_comes_back_as_that_delay(kafka_bootstrap, models_dir, tmp_path):
    """Calibration: p50 with a 50 ms sleep scorer is 50 ms (± 2 ms) above the noop baseline."""
    workload = {"type": "closed_loop", "outstanding": 1, "count": 60, "duration_s": 60}
    noop = run_experiment(_exp(kafka_bootstrap, serving={"backend": "noop"}, workload=workload),
                          tmp_path / "noop", models_dir=models_dir)
    slept = run_experiment(_exp(kafka_bootstrap, serving={"backend": "sleep", "delay_ms": 50},
                                workload=workload), tmp_path / "sleep", models_dir=models_dir)
    p50_noop = noop["points"][0]["latency_ms"]["p50"]
    p50_sleep = slept["points"][0]["latency_ms"]["p50"]
    assert noop["points"][0]["accounting"]["scored"] == 60
    assert slept["points"][0]["accounting"]["scored"] == 60
    assert abs((p50_sleep - p50_noop) - 50.0) <= 2.0, (p50_noop, p50_sleep)


def test_closed_loop_with_two_worker_processes(kafka_bootstrap, models_dir, tmp_path):
    exp = _exp(kafka_bootstrap, workload={"type": "closed_loop", "outstanding": 4, "count": 200,
                                          "duration_s": 60}, batch_size=8, parallelism=2)
    summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)
    acc = summary["points"][0]["accounting"]
    assert acc["sent"] == 200 and acc["scored"] == 200 and acc["missing"] == 0
    t = pq.read_table(tmp_path / "run" / "batches.parquet").to_pydict()
    # Closed loop: the slot is the send time.
    assert t["intended_ns"] == t["created_ns"]
    # mp = 2: two worker processes in one group shared the partitions.
    assert set(t["worker_id"]) == {"kafka-0", "kafka-1"}


BAD_FILES = {
    "batch_size: 0": "batch_size",
    "workload: {type: constant, rate: -5}": "workload.constant.rate",
    "serving: {backend: tensorrt}": "serving",
    "engine: storm": "engine",
    "colour: blue": "colour",
    "sweep: {batch_size: 3}": "sweep.batch_size",
    "engine_options: {bogus: 1}": "engine_options.bogus: unknown option of the kafka engine",
}


@pytest.mark.parametrize("line, field", list(BAD_FILES.items()))
def test_bad_experiment_file_names_the_field_in_one_line(tmp_path, line, field):
    body = {"name": "bad", "workload": "{type: constant, rate: 10}"}
    key = line.split(":", 1)[0]
    text = "\n".join(f"{k}: {v}" for k, v in body.items() if k != key) + "\n" + line + "\n"
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    r = subprocess.run([sys.executable, "-m", "services.runner.cli", "run", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert field in lines[0], lines[0]


def test_repetitions_report_mean_and_sd(kafka_bootstrap, models_dir, tmp_path):
    exp = _exp(kafka_bootstrap, workload={"type": "constant", "rate": 100, "duration_s": 2},
               repetitions=2)
    point = run_experiment(exp, tmp_path / "run", models_dir=models_dir)["points"][0]
    assert point["repetitions"] == 2 and len(point["per_repetition"]) == 2
    reps = [r["latency_ms"]["p50"] for r in point["per_repetition"]]
    assert point["latency_ms"]["p50"] == pytest.approx(sum(reps) / 2)
    assert point["sd"]["latency_ms"]["p50"] == pytest.approx(float(np.std(reps, ddof=1)))
    assert point["accounting"]["scored"] == 200


def test_sustainable_search_finds_the_capacity_of_a_known_scorer(kafka_bootstrap, models_dir, tmp_path):
    """A worker that sleeps 20 ms per batch. Its capacity c is what it puts out when overloaded (the
    output rate of the points it failed for being fed too fast: ~47/s here), and it can never exceed
    1 / its busy time per batch (receive to send, ~20.3 ms: ~49/s). The search must land within its
    10 % precision of c, less the 2 % the rule leaves the output rate: c / 1.1 / 1.02 at least."""
    exp = _exp(kafka_bootstrap, serving={"backend": "sleep", "delay_ms": 20},
               workload={"type": "closed_loop", "count": 20},
               search={"start_rate": 20, "max_rate": 400, "precision": 0.1, "point_duration_s": 8})
    summary = run_experiment(exp, tmp_path / "run", models_dir=models_dir)
    t = pq.read_table(tmp_path / "run" / "batches.parquet").to_pydict()
    busy_ms = np.median((np.array(t["worker_send_ns"], dtype=float) - np.array(t["worker_receive_ns"], dtype=float)) / 1e6)
    overloaded = [p["output_rate_bps"] for p in summary["points"] if p["params"].get("search")
                  and any(r.startswith("output rate") for r in p["sustainable"]["reasons"])]
    capacity = max(overloaded)
    rate, upper = summary["sustainable_rate"], summary["search"]["upper"]
    assert 20.0 <= busy_ms < 21.0   # the sleep, and little else
    assert capacity <= 1000.0 / busy_ms
    assert rate is not None and capacity / 1.1 / 1.02 <= rate <= 1000.0 / busy_ms, (capacity, summary["search"]["tried"])
    assert (upper - rate) / rate <= 0.1
    tried = summary["search"]["tried"]
    assert any(not t["sustainable"] for t in tried) and any(t["sustainable"] for t in tried)
    assert summary["search"]["status"] == "converged"
    # Every tried rate is a point of the summary with its verdict.
    assert sum(1 for p in summary["points"] if p["params"].get("search")) == len(tried)


def test_run_topics_stamp_log_append_time(kafka_bootstrap):
    from confluent_kafka.admin import AdminClient, ConfigResource

    from crayfish.kafka import RunTopics, create_topics, delete_topics

    topics = RunTopics.for_run("cfgcheck")
    create_topics(kafka_bootstrap, topics, partitions=3)
    try:
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        for name in (topics.input, topics.output, topics.dead_letter):
            res = ConfigResource(ConfigResource.Type.TOPIC, name)
            cfg = admin.describe_configs([res])[res].result(timeout=10)
            assert cfg["message.timestamp.type"].value == "LogAppendTime"
            assert int(cfg["max.message.bytes"].value) >= 8 * 224 * 224 * 3 * 4 * 3
        md = admin.list_topics(timeout=10)
        assert len(md.topics[topics.input].partitions) == 3
    finally:
        delete_topics(kafka_bootstrap, topics)


def test_prediction_checker_counts_a_wrong_output(models_dir):
    from services.collector.checker import PredictionChecker
    from services.generator.settings import GeneratorSettings
    from serving.models import model_paths, reference_forward

    gs = GeneratorSettings(bootstrap="unused:1", topic="t", run_id="r", model="ffnn", item_shape=[1, 784],
                           batch_size=4, workload={"type": "constant", "rate": 1, "duration_s": 1})
    checker = PredictionChecker(gs, models_dir, sample_rate=1.0)
    from services.generator.generator import BatchFactory

    x = BatchFactory(gs).pool_arrays[5]
    good = reference_forward("ffnn", model_paths("ffnn", models_dir).weights, x)
    assert checker.check(5, good) is True
    bad = good.copy()
    bad[0, 3] += 1e-3
    assert checker.check(5, bad) is False
    assert checker.check(6, good) is False  # another batch's input
    assert checker.report()["checked"] == 3 and checker.report()["wrong"] == 2


def test_sigterm_to_the_runner_stops_every_service_it_started(models_dir, tmp_path):
    """``crayfish run`` killed with SIGTERM tears down like Ctrl-C: worker, generator, collector and
    its own Kafka broker are gone, nothing is left running."""
    import os
    import signal
    import time

    import psutil

    path = tmp_path / "long.yaml"
    path.write_text("name: long\nmodel: ffnn\nengine: kafka\nworkload: {type: constant, rate: 20, duration_s: 120}\n")
    out = tmp_path / "run"
    env = {**os.environ, "CRAYFISH_MODELS_DIR": str(models_dir)}
    runner = subprocess.Popen([sys.executable, "-m", "services.runner.cli", "run", str(path), "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    me = psutil.Process(runner.pid)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any("services.generator" in " ".join(p.cmdline())
                                                  for p in me.children(recursive=True)):
        assert runner.poll() is None, runner.stdout.read().decode()[-3000:]
        time.sleep(0.5)
    started = me.children(recursive=True)
    names = " ".join(" ".join(p.cmdline()) for p in started)
    assert "sps_workers.kafka" in names and "services.collector" in names and "kafka.Kafka" in names, names
    runner.send_signal(signal.SIGTERM)
    runner.wait(90)
    _, alive = psutil.wait_procs(started, timeout=30)
    for p in alive:  # do not leave them to the rest of the suite
        p.kill()
    assert not alive, [" ".join(p.cmdline())[:120] for p in alive]
    # ... and what was measured is written: the point it was measuring, not finished, with the reason.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "interrupted (signal 15)", summary
    [point] = summary["points"]
    assert point["params"]["engine"] == "kafka" and point["params"]["workload"] == "constant", point
    assert (point["valid"], point["finished"], point["reasons"]) == (False, False, ["not finished: interrupted (signal 15)"])


def test_a_point_that_fails_leaves_the_points_before_it_measured(kafka_bootstrap, models_dir, tmp_path):
    """A fault in the second point of a sweep (its engine exits at start): the run stops with the
    fault, and summary.json still holds the first point, measured, and the second, invalid with why."""
    dies_at_mp2 = ["sh", "-c", "test ${CRAYFISH_PARALLELISM} = 1 || exit 3; "
                               "exec ${CRAYFISH_PYTHON} -m sps_workers.kafka --config @${CRAYFISH_WORKER_SETTINGS}"]
    exp = Experiment.model_validate({
        "name": "fault", "model": "ffnn", "engine": "command", "engine_options": {"command": dies_at_mp2},
        "kafka": {"bootstrap": kafka_bootstrap, "partitions": 2}, "sweep": {"parallelism": [1, 2]},
        "workload": {"type": "constant", "rate": 50, "duration_s": 2}, "validity": {"min_duration_s": 1, "min_count": 20}})
    with pytest.raises(Exception) as raised:
        run_experiment(exp, tmp_path / "run", models_dir=models_dir)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    first, second = summary["points"]
    assert first["params"]["parallelism"] == 1 and first["accounting"]["scored"] == first["accounting"]["sent"] == 100
    assert second["params"]["parallelism"] == 2 and second["params"]["engine"] == "command"
    assert second["valid"] is False and not second["finished"]
    assert summary["stopped"].startswith(type(raised.value).__name__) and "exit" in summary["stopped"], summary["stopped"]
    assert second["reasons"] == [f"not finished: {summary['stopped']}"]
    assert (tmp_path / "run" / "batches.parquet").exists() and (tmp_path / "run" / "manifest.json").exists()
