"""`crayfish conformance` against adapters that are not registered in Python: the Kafka Streams
engine launched as a command passes; an adapter that drops bad records silently fails with a
readable table; a pipeline that already runs is checked as `external`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest

from crayfish.host.paths import REPO_ROOT
from crayfish.host.procs import Service
from crayfish.kafka import RunTopics, create_topics, delete_topics
from services.conformance.suite import OWN_START_CHECKS, ROUND_CHECKS, STOP_CHECKS
from sps_workers import ENGINES
from sps_workers.settings import WorkerSettings

CRAYFISH = [sys.executable, "-m", "services.runner.cli"]
CHECKS = [*ROUND_CHECKS, *STOP_CHECKS, *OWN_START_CHECKS]


def conformance(*args: str, timeout_s: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*CRAYFISH, "conformance", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=timeout_s)


def rows(out: str) -> dict[str, str]:
    """check -> result, from the printed table."""
    table = {}
    for line in out.splitlines():
        name = next((n for n in CHECKS if line.startswith(n + " ")), None)
        if name:
            table[name] = line[len(name):].split()[0]
    return table


@pytest.mark.parametrize("module", ["sps_workers.kafka_streams", "sps_workers.go"])
def test_java_and_native_adapters_launched_as_a_command_pass(kafka_bootstrap, module):
    done = conformance("--engine", "command", "--bootstrap", kafka_bootstrap, "--scoring-service", "--command",
                       f"${{CRAYFISH_PYTHON}} -m {module} --config @${{CRAYFISH_WORKER_SETTINGS}}")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    table = rows(done.stdout)
    assert set(table.values()) == {"pass"} and len(table) == len(CHECKS), done.stdout
    assert table["mp > 1"] == table["clean stop"] == table["hop spans"] == "pass", done.stdout
    assert table["scoring service"] == "pass" and "10/10 passed or not applicable; 0 failed" in done.stdout


DROPPER = '''
    """An adapter that scores with the project's operator but drops every bad record silently."""
    import os, signal
    from confluent_kafka import Consumer, Producer
    from sps_workers.runtime import EngineInstance
    from sps_workers.settings import WorkerSettings

    settings = WorkerSettings.model_validate_json(open(os.environ["CRAYFISH_WORKER_SETTINGS"]).read())
    inst = EngineInstance(settings, engine="dropper")
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": settings.consumer_group,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.input_topic])
    producer = Producer({"bootstrap.servers": settings.bootstrap})
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        for m in consumer.consume(50, timeout=0.2):
            if m.error():
                continue
            out = inst.handle(m.value(), m.headers(), m.timestamp()[1], m.topic(), m.partition(), m.offset())
            if not out.dead:
                producer.produce(out.topic, out.value, m.key(), headers=out.headers)
        producer.flush()
    consumer.close()
    inst.close()
'''


def test_an_adapter_that_drops_bad_records_fails_with_a_readable_table(kafka_bootstrap, tmp_path):
    script = tmp_path / "dropper.py"
    script.write_text(textwrap.dedent(DROPPER))
    done = conformance("--engine", "command", "--bootstrap", kafka_bootstrap, "--command",
                       f"${{CRAYFISH_PYTHON}} {script}", "--check", "accounting", "--check", "dead letters",
                       "--check", "keeps scoring", "--check", "clean stop")
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    table = rows(done.stdout)
    assert table == {"accounting": "pass", "dead letters": "FAIL", "keeps scoring": "pass", "clean stop": "pass"}, done.stdout
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("dead letters"))
    assert "bad_shape" in line and "expected" in line and "nothing" in line, line
    assert "3/4 passed or not applicable; 1 failed" in done.stdout


def test_a_pipeline_that_already_runs_is_checked_as_external(kafka_bootstrap, models_dir, tmp_path):
    run_id = uuid.uuid4().hex[:8]
    topics = RunTopics.for_run(f"ext-{run_id}")
    create_topics(kafka_bootstrap, topics, partitions=2)
    ws = WorkerSettings(bootstrap=kafka_bootstrap, input_topic=topics.input, output_topic=topics.output,
                        dead_letter_topic=topics.dead_letter, consumer_group=f"theirs-{run_id}", model="ffnn",
                        models_dir=str(models_dir), worker_id="theirs")
    (tmp_path / "w.json").write_text(ws.model_dump_json())
    pipeline = Service("their-pipeline", ["-m", "sps_workers.kafka", "--config", f"@{tmp_path / 'w.json'}"],
                       tmp_path / "pipeline.log")
    try:
        ENGINES["kafka"].wait_ready(ws, 2, [pipeline], timeout_s=120)
        done = conformance("--engine", "external", "--bootstrap", kafka_bootstrap, "--input", topics.input,
                           "--output", topics.output, "--dead-letter", topics.dead_letter, "--check", "accounting",
                           "--check", "dead letters", "--check", "predictions", "--check", "clean stop",
                           "--check", "mp > 1")
    finally:
        pipeline.stop()
        delete_topics(kafka_bootstrap, topics)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    table = rows(done.stdout)
    assert table == {"accounting": "pass", "dead letters": "pass", "predictions": "pass",
                     "clean stop": "n/a", "mp > 1": "n/a"}, done.stdout


def test_a_bad_command_line_is_one_line(kafka_bootstrap):
    done = conformance("--engine", "command", "--bootstrap", kafka_bootstrap)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == ["error: engine_options.command: required: the program and its "
                                                "arguments, e.g. [java, -jar, my-job.jar]"]
    done = conformance("--engine", "external", "--bootstrap", kafka_bootstrap)
    assert done.returncode == 2 and "needs --bootstrap, --input, --output and --dead-letter" in done.stderr
