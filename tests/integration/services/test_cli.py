"""The ``crayfish`` command line as a user runs it: every command of README's "The CLI" block, in a
subprocess, against real parts (the session's Kafka broker, background brokers of its own, real run
folders). Bad input ends in exit code 2 and one line naming the problem, never a traceback.

Covered in other files: ``run --stack`` (test_stack.py), ``hops`` on a run with a known bottleneck
(test_tracing.py), ``report`` and ``compare`` in depth (test_report.py), a bad field at ``run`` and
SIGTERM to ``run`` (test_pipeline.py); ``env build`` runs in ``make envs`` and on first use of an
environment.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from services.broker import launcher
from tests.support.procs import loopback_listeners

REPO = Path(__file__).resolve().parents[3]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.y*ml"))

# 50 batches/s for 2 s: 100 batches, a quarter of them traced per hop.
TINY = {"name": "tiny", "model": "ffnn", "engine": "kafka",
        "workload": {"type": "constant", "rate": 50, "duration_s": 2},
        "validity": {"min_duration_s": 1, "min_count": 20}, "trace_sample": 0.25, "check_predictions": 0.1}


def crayfish(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.runner.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The error line of a command that failed as it should: exit code 2, one line, no traceback."""
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_under(folder: Path) -> list[psutil.Process]:
    """Live processes whose command line names ``folder`` (brokers keep their data dir there)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if str(folder) in cmdline and p.info["status"] != psutil.STATUS_ZOMBIE and p.pid != os.getpid():
            found.append(p)
    return found


@pytest.fixture
def own_cache(tmp_path, models_dir):
    """An environment for the CLI with a cache folder of its own (brokers' state and data land
    there, the Kafka jars are the shared ones); whatever broker a test leaves there is stopped."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "kafka").symlink_to(launcher.ensure_jars().parent, target_is_directory=True)
    env = {**os.environ, "CRAYFISH_CACHE_DIR": str(cache), "CRAYFISH_MODELS_DIR": str(models_dir)}
    yield cache, env
    leftovers = processes_under(cache)
    for p in leftovers:
        p.terminate()
    _, alive = psutil.wait_procs(leftovers, timeout=30)
    for p in alive:
        p.kill()


def kafka_processes(cache: Path) -> list[psutil.Process]:
    return [p for p in processes_under(cache) if "kafka.Kafka" in p.cmdline()]


@pytest.fixture(scope="module")
def cli_run(kafka_bootstrap, models_dir, tmp_path_factory):
    """One small run made by ``crayfish run FILE --bootstrap B --out DIR`` against the session broker."""
    base = tmp_path_factory.mktemp("cli-run")
    exp = write_yaml(base / "tiny.yaml", TINY)
    out = base / "run"
    env = {**os.environ, "CRAYFISH_MODELS_DIR": str(models_dir)}
    r = crayfish("run", exp, "--bootstrap", kafka_bootstrap, "--out", out, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


# --- crayfish validate, and the ready files of experiments/ ------------------------------------

def test_validate_accepts_a_good_file_and_counts_its_points(tmp_path):
    sweep = {"batch_size": [1, 4], "codec": ["protobuf", "crayfish-json"]}
    exp = write_yaml(tmp_path / "good.yaml", {**TINY, "sweep": sweep})
    r = crayfish("validate", exp)
    assert r.returncode == 0, r.stderr
    assert f"{exp}: ok (4 point(s))" in r.stdout


BAD_FIELDS = {
    "batch_size: 0": "batch_size",
    "workload: {type: constant, rate: -5}": "workload.constant.rate",
    "kafka: {partitions: 0}": "kafka.partitions",
    "warmup: {fraction: 2}": "warmup.fraction",
    "colour: blue": "colour",
    "sweep: {batch_size: 3}": "sweep.batch_size",
    "sweep: {batch_size: [1, 0]}": "batch_size",   # a sweep value is checked like the field itself
    "model: gpt": "model: unknown model 'gpt'; known: ffnn, resnet50",
    "engine: storm": "engine: unknown engine 'storm'; known: kafka, flink, ",
    "codec: xml": "codec: unknown codec 'xml'; known: protobuf, crayfish-json",
    "engine_options: {bogus: 1}": "engine_options.bogus: unknown option of the kafka engine (known: none)",
    "kafka: {client: {sasl.password: hunter2}}": "kafka.client: sasl.password: a secret is never written in the experiment",
    "kafka: {client: {sasl.password: '${env:CRAYFISH_NO_SUCH_VAR}'}}":
        "kafka.client: sasl.password: environment variable CRAYFISH_NO_SUCH_VAR is not set",
    "kafka: {topic_configs: {message.timestamp.type: CreateTime}}": "kafka.topic_configs.message.timestamp.type",
    "kafka: {replication_factor: 0}": "kafka.replication_factor",
    "hosts: {generators: 2}\nworkload: {type: closed_loop, duration_s: 2}": "hosts.generators: a closed loop runs on one generator",
}


@pytest.mark.parametrize("line, field", list(BAD_FIELDS.items()))
def test_validate_names_the_bad_field_in_one_line(tmp_path, line, field):
    key = line.split(":", 1)[0]
    body = {k: v for k, v in {"name": "bad", "workload": {"type": "constant", "rate": 10}}.items() if k != key}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body) + line + "\n")
    msg = one_line_error(crayfish("validate", path))
    assert msg.startswith(f"error: {path}: "), msg
    assert field in msg.removeprefix(f"error: {path}: "), msg


@pytest.mark.parametrize("engine, options, said", [
    ("kafka", {"bogus": 1}, "engine_options.bogus: unknown option of the kafka engine (known: none)"),
    ("flink", {"bundle_size": 0}, "engine_options.bundle_size: Input should be greater than or equal to 1"),
    ("flink", {"operator_parallelism": [1, 2, 1]},
     "engine_options.operator_parallelism: the scoring entry (2) must equal parallelism (1)"),
    ("spark", {"master": "localhost:7077"}, "engine_options.master: must be a Spark master URL"),
    ("ray", {"address": "ray://h:1", "num_cpus": 2}, "engine_options.num_cpus: only applies to a local Ray"),
    ("bytewax", {"workers_per_process": 2}, "engine_options.workers_per_process: 2 does not divide parallelism 1"),
    ("faust", {"concurency": 2}, "engine_options.concurency: unknown option of the faust engine (known: "),
    ("kafka-streams", {"jvm_options": "-Xmx1g"}, "engine_options.jvm_options: Input should be a valid list"),
    ("command", {}, "engine_options.command: required: the program and its arguments, e.g. [java, -jar, my-job.jar]"),
    ("command", {"command": ["java"], "ready": "soon"}, "engine_options.ready: Input should be 'group' or 'file'"),
    ("external", {"x": 1}, "kafka.topics: engine external measures a pipeline that already runs"),
])
def test_validate_checks_engine_options_against_the_engine(tmp_path, engine, options, said):
    """Each engine's options class, before anything starts: one line naming the option (and, for an
    unknown key, the engine); the same options with a good value pass."""
    path = write_yaml(tmp_path / "opts.yaml", {**TINY, "engine": engine, "engine_options": options})
    msg = one_line_error(crayfish("validate", path))
    assert msg.startswith(f"error: {path}: {said}"), msg


def test_validate_knows_engine_external_and_its_topics(tmp_path):
    topics = {"input": "in", "output": "out", "dead_letter": "dlq"}
    good = write_yaml(tmp_path / "ext.yaml", {**TINY, "engine": "external",
                                              "kafka": {"bootstrap": "127.0.0.1:9092", "topics": topics}})
    r = crayfish("validate", good)
    assert r.returncode == 0, r.stderr
    precreated = write_yaml(tmp_path / "precreated.yaml", {**TINY, "kafka": {"bootstrap": "127.0.0.1:9092",
                                                                             "topics": topics}})
    assert crayfish("validate", precreated).returncode == 0
    clusterless = write_yaml(tmp_path / "clusterless.yaml", {**TINY, "kafka": {"topics": topics}})
    msg = one_line_error(crayfish("validate", clusterless))
    assert msg.endswith("kafka.topics: pre-created topics live on a cluster: name it (kafka.bootstrap); without "
                        "one the runner starts a fresh broker and gives every point fresh topics"), msg
    incomplete = write_yaml(tmp_path / "incomplete.yaml", {**TINY, "engine": "external", "kafka": {
        "bootstrap": "127.0.0.1:9092", "topics": {"input": "in", "output": "out"}}})
    assert "kafka.topics.dead_letter" in one_line_error(crayfish("validate", incomplete))


def test_validate_checks_engine_options_of_every_sweep_point(tmp_path):
    good = write_yaml(tmp_path / "good.yaml", {**TINY, "engine": "flink", "parallelism": 2,
                                               "engine_options": {"operator_parallelism": [1, 2, 1]}})
    r = crayfish("validate", good)
    assert r.returncode == 0, r.stderr
    # mp 1 does not fit the scoring entry 2: the sweep point that says so is named.
    bad = write_yaml(tmp_path / "bad.yaml", {**TINY, "engine": "flink", "parallelism": 2,
                                             "sweep": {"parallelism": [2, 1]},
                                             "engine_options": {"operator_parallelism": [1, 2, 1]}})
    msg = one_line_error(crayfish("validate", bad))
    assert "sweep point parallelism=1: engine_options.operator_parallelism: the scoring entry (2) must equal " \
           "parallelism (1)" in msg, msg


def test_validate_names_the_bad_sweep_point(tmp_path):
    path = write_yaml(tmp_path / "sweep.yaml", {"name": "s", "workload": {"type": "closed_loop", "count": 10},
                                                "sweep": {"rate": [5]}})
    msg = one_line_error(crayfish("validate", path))
    assert "sweep point rate=5" in msg and "workload.closed_loop.rate" in msg, msg


UNREADABLE = {
    "missing": ("no such file", None),
    "folder": ("cannot read", "mkdir"),
    "not-yaml": ("not valid YAML", b"name: [unclosed\n"),
    "binary": ("not UTF-8", b"\xff\xfe\x00\x01"),
    "empty": ("expected a mapping", b""),
    "a-list": ("expected a mapping", b"- name: x\n"),
}


@pytest.mark.parametrize("kind", list(UNREADABLE))
def test_validate_an_unusable_file_fails_in_one_line(tmp_path, kind):
    said, content = UNREADABLE[kind]
    path = tmp_path / f"{kind}.yaml"
    if content == "mkdir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    msg = one_line_error(crayfish("validate", path))
    assert str(path) in msg and said in msg, msg


def test_experiments_folder_has_the_ready_files_readme_names():
    names = {p.name for p in EXPERIMENTS}
    assert {"default.yaml", "throughput.yaml"} <= names, names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.name for p in EXPERIMENTS])
def test_every_ready_experiment_file_validates(path):
    r = crayfish("validate", path.relative_to(REPO))
    assert r.returncode == 0, r.stderr
    assert re.search(r": ok \([1-9]\d* point\(s\)", r.stdout), r.stdout


# --- crayfish run --------------------------------------------------------------------------------

def test_run_with_bootstrap_scores_every_batch_on_that_broker(cli_run, kafka_bootstrap):
    out, r = cli_run
    assert f"run folder: {out}" in r.stdout.replace("\n", "")
    summary = json.loads((out / "summary.json").read_text())
    [point] = summary["points"]
    acc = point["accounting"]
    assert (acc["sent"], acc["scored"], acc["dead_lettered"], acc["missing"], acc["duplicates"], acc["wrong"]) \
        == (100, 100, 0, 0, 0, 0), acc
    workers = list(out.rglob("worker.json"))
    assert workers and all(json.loads(w.read_text())["bootstrap"] == kafka_bootstrap for w in workers)
    assert (out / "batches.parquet").exists() and (out / "manifest.json").exists()


@pytest.mark.parametrize("bootstrap", ["dead-port", "localhost"])
def test_run_with_an_unusable_bootstrap_fails_in_one_line_naming_it(tmp_path, models_dir, bootstrap):
    if bootstrap == "dead-port":
        bootstrap = f"127.0.0.1:{free_port()}"
    exp = write_yaml(tmp_path / "tiny.yaml", TINY)
    env = {**os.environ, "CRAYFISH_MODELS_DIR": str(models_dir)}
    msg = one_line_error(crayfish("run", exp, "--bootstrap", bootstrap, "--out", tmp_path / "run",
                                  env=env, timeout=90))
    assert "Kafka" in msg and bootstrap in msg, msg
    assert not (tmp_path / "run" / "summary.json").exists()


def test_run_with_a_dead_model_server_target_fails_in_one_line_naming_it(tmp_path, kafka_bootstrap, models_dir):
    target = f"127.0.0.1:{free_port()}"
    exp = write_yaml(tmp_path / "ext.yaml", {**TINY, "serving": {"kind": "external", "server": "scoring",
                                                                  "target": target}})
    env = {**os.environ, "CRAYFISH_MODELS_DIR": str(models_dir)}
    msg = one_line_error(crayfish("run", exp, "--bootstrap", kafka_bootstrap, "--out", tmp_path / "run",
                                  env=env, timeout=90))
    assert "model server scoring" in msg and target in msg, msg
    assert not (tmp_path / "run" / "summary.json").exists()


# --- crayfish broker start|status|stop -----------------------------------------------------------

def test_broker_start_status_stop(own_cache):
    cache, env = own_cache
    r = crayfish("broker", "status", env=env)
    assert (r.returncode, r.stdout.strip()) == (1, "no broker running")

    r = crayfish("broker", "start", env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    bootstrap = r.stdout.strip()
    assert re.fullmatch(r"127\.0\.0\.1:\d+", bootstrap), r.stdout
    [broker] = kafka_processes(cache)           # runs on after the command returned
    ports = {a.port for a in loopback_listeners(broker.pid, at_least=2)}  # broker + controller, loopback only
    assert int(bootstrap.rsplit(":", 1)[1]) in ports
    launcher.wait_ready(bootstrap, timeout_s=30)  # a real Kafka client gets metadata from it

    r = crayfish("broker", "status", env=env)
    assert (r.returncode, r.stdout.strip()) == (0, f"broker at {bootstrap} is ready")
    r = crayfish("broker", "start", env=env, timeout=60)   # a second start reuses the running broker
    assert (r.returncode, r.stdout.strip()) == (0, bootstrap)
    assert [p.pid for p in kafka_processes(cache)] == [broker.pid]

    r = crayfish("broker", "stop", env=env, timeout=90)
    assert (r.returncode, r.stdout.strip()) == (0, f"stopped broker at {bootstrap}")
    assert kafka_processes(cache) == []
    r = crayfish("broker", "status", env=env)
    assert (r.returncode, r.stdout.strip()) == (1, "no broker running")
    r = crayfish("broker", "stop", env=env)
    assert (r.returncode, r.stdout.strip()) == (0, "no broker running")


def test_broker_status_says_in_one_line_that_a_killed_broker_is_gone(own_cache):
    cache, env = own_cache
    r = crayfish("broker", "start", env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    bootstrap = r.stdout.strip()
    [broker] = kafka_processes(cache)
    broker.send_signal(signal.SIGKILL)
    psutil.wait_procs([broker], timeout=30)
    r = crayfish("broker", "status", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    assert r.stdout.strip().splitlines() == [f"no broker running (the one at {bootstrap} has exited)"], r.stdout
    r = crayfish("broker", "stop", env=env)
    assert r.returncode == 0 and "no broker running" in r.stdout, r.stdout + r.stderr
    r = crayfish("broker", "start", env=env, timeout=180)   # and a new one starts
    assert r.returncode == 0 and r.stdout.strip() != bootstrap, r.stdout + r.stderr
    assert crayfish("broker", "stop", env=env, timeout=90).returncode == 0
    assert kafka_processes(cache) == []


def test_run_with_its_own_broker_leaves_the_background_broker_alone(own_cache, tmp_path):
    """`crayfish run FILE` without --bootstrap starts and stops a broker of its own; the background
    broker of `crayfish broker start` stays the one that `status` and `stop` talk about."""
    cache, env = own_cache
    r = crayfish("broker", "start", env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    background = r.stdout.strip()
    [broker] = kafka_processes(cache)

    exp = write_yaml(tmp_path / "tiny.yaml", TINY)
    r = crayfish("run", exp, "--out", tmp_path / "run", env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    acc = json.loads((tmp_path / "run" / "summary.json").read_text())["points"][0]["accounting"]
    assert acc["sent"] == acc["scored"] == 100, acc
    [own] = {json.loads(w.read_text())["bootstrap"] for w in (tmp_path / "run").rglob("worker.json")}
    assert own != background                   # the run used a broker of its own ...
    assert [p.pid for p in kafka_processes(cache)] == [broker.pid]  # ... and stopped it

    r = crayfish("broker", "status", env=env)
    assert (r.returncode, r.stdout.strip()) == (0, f"broker at {background} is ready")
    r = crayfish("broker", "stop", env=env, timeout=90)
    assert (r.returncode, r.stdout.strip()) == (0, f"stopped broker at {background}")
    assert kafka_processes(cache) == []


# --- crayfish hops / report / compare on a run folder of `crayfish run` ----------------------------

def test_hops_shows_the_traced_hops_of_a_run(cli_run):
    out, _ = cli_run
    r = crayfish("hops", out)
    assert r.returncode == 0, r.stderr
    traced = json.loads((out / "summary.json").read_text())["points"][0]["hops_traced"]
    assert f"{traced['batches']} traced batches" in r.stdout
    for hop in ("produce", "score", "publish", "e2e"):
        assert re.search(rf"│\s+{hop} │", r.stdout), r.stdout
    assert "hops sum to" in r.stdout


def test_report_writes_the_html_of_a_run(cli_run, tmp_path):
    out, _ = cli_run
    html = tmp_path / "r.html"
    r = crayfish("report", out, "--out", html)
    assert r.returncode == 0, r.stderr
    assert str(html) in r.stdout.replace("\n", "")
    assert html.read_text().lstrip().lower().startswith("<!doctype html")


def test_compare_of_a_run_with_itself_gives_ratios_of_one(cli_run, tmp_path):
    out, _ = cli_run
    html = tmp_path / "cmp.html"
    r = crayfish("compare", out, out, "--out", html)
    assert r.returncode == 0, r.stderr
    assert "1 matching point(s)" in r.stdout and html.exists()
    ratios = re.findall(r"│\s+([\d.]+)× │", r.stdout)
    assert ratios and set(ratios) == {"1.000"}, r.stdout


@pytest.mark.parametrize("command", ["hops", "report", "compare"])
@pytest.mark.parametrize("folder", ["empty", "corrupt-summary"])
def test_a_folder_that_is_not_a_run_fails_in_one_line(tmp_path, command, folder):
    d = tmp_path / "not-a-run"
    d.mkdir()
    if folder == "corrupt-summary":
        (d / "summary.json").write_text('{"points": [')
    args = [d, d] if command == "compare" else [d]
    msg = one_line_error(crayfish(command, *args))
    assert str(d) in msg and ("no summary.json" if folder == "empty" else "not a readable summary") in msg, msg


# --- crayfish models build / env list --------------------------------------------------------------

def test_models_build_writes_the_seeded_model(tmp_path, models_dir):
    r = crayfish("models", "build", "--model", "ffnn", "--dir", tmp_path)
    assert r.returncode == 0, r.stderr
    onnx = tmp_path / "ffnn" / "ffnn.onnx"
    assert r.stdout.strip() == f"ffnn: {onnx}" and onnx.stat().st_size > 0
    import onnxruntime as ort

    from serving.models import MODELS

    spec = MODELS["ffnn"]   # onnxruntime loads it and scores any batch size (a dynamic batch axis)
    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    [y] = sess.run(None, {spec.input_name: np.zeros((3, *spec.input_shape), dtype=spec.input_dtype)})
    assert y.shape == (3, *spec.output_shape)
    # Same seed, same weights as the session's models.
    built, shared = np.load(tmp_path / "ffnn" / "ffnn.npz"), np.load(models_dir / "ffnn" / "ffnn.npz")
    assert sorted(built.files) == sorted(shared.files)
    assert all(np.array_equal(built[k], shared[k]) for k in built.files)


@pytest.mark.parametrize("args, said", [(["--model", "gpt"], "unknown model 'gpt'"),
                                        (["--model", "ffnn", "--dir", "/dev/null/models"], "cannot write")])
def test_models_build_bad_input_fails_in_one_line(args, said):
    msg = one_line_error(crayfish("models", "build", *args))
    assert said in msg, msg


def env_list(env: dict | None = None) -> dict[str, str]:
    r = crayfish("env", "list", env=env)
    assert r.returncode == 0, r.stderr
    lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
    rows = [re.fullmatch(r"(\S+)\s+(built|not built)\s+(\S+)", ln) for ln in lines]
    assert all(rows), r.stdout
    return {m[1]: m[2] for m in rows}


def test_env_list_shows_every_environment_and_whether_it_is_built():
    from crayfish.host import envs as environments

    expected = ["core"] + sorted(p.parent.name for p in (REPO / "envs").glob("*/requirements.txt"))
    states = env_list()
    assert list(states) == expected
    assert states == {n: "built" if environments.is_built(n) else "not built" for n in expected}


def test_env_list_with_no_environment_built(tmp_path):
    states = env_list({**os.environ, "CRAYFISH_ENVS_DIR": str(tmp_path / "none")})
    assert states.pop("core") == "built"      # the running .venv
    assert states and set(states.values()) == {"not built"}, states


def test_env_build_of_an_unknown_environment_fails_in_one_line():
    msg = one_line_error(crayfish("env", "build", "nosuch"))
    assert "unknown environment 'nosuch'" in msg and "core" in msg, msg
