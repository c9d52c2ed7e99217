"""``engine: command``: start any program as the engine, with the worker settings it needs.

The runner starts ``python -m sps_workers.command --config <WorkerSettings>`` like any engine's
worker; this launcher checks the settings and ``engine_options`` (:class:`CommandOptions`), then
*replaces itself* with the program (``exec``): the runner's SIGTERM, its SIGKILL after the grace
period, its CPU and memory samples and its exit code all reach the program itself.

What the program gets (the contract is docs/adapters.md):

- ``CRAYFISH_WORKER_SETTINGS``: path of the full WorkerSettings JSON document (its
  ``kafka_client`` holds the cluster's client properties with secrets as references);
- ``CRAYFISH_KAFKA_PROPERTIES``: path of the same client properties *resolved*, as a
  librdkafka-style properties file (:func:`kafka_properties_file`), in this service's own
  temporary folder, mode 0600;
- plain variables for what most pipelines need (:func:`adapter_environment`): bootstrap, topics,
  group id, codec, model name and folder, parallelism, worker id, ready file;
- ``${CRAYFISH_*}`` references in its arguments replaced by the same values.
"""

from __future__ import annotations

import os
import string
import sys
import tempfile
from pathlib import Path

from crayfish.kafka_client import KafkaClientError
from serving.models import model_paths
from sps_workers.command.options import CommandOptions
from sps_workers.runtime import read_settings
from sps_workers.settings import WorkerSettings

KAFKA_PROPERTIES_ENV = "CRAYFISH_KAFKA_PROPERTIES"


def adapter_environment(settings: WorkerSettings, settings_file: Path,
                        kafka_properties: Path | None = None) -> dict[str, str]:
    """The variables every adapter gets (docs/adapters.md, "What an adapter is given")."""
    model = model_paths(settings.model, settings.models_dir)
    return {
        "CRAYFISH_WORKER_SETTINGS": str(settings_file),
        KAFKA_PROPERTIES_ENV: str(kafka_properties or ""),
        "CRAYFISH_BOOTSTRAP": settings.bootstrap,
        "CRAYFISH_INPUT_TOPIC": settings.input_topic,
        "CRAYFISH_OUTPUT_TOPIC": settings.output_topic,
        "CRAYFISH_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "CRAYFISH_GROUP_ID": settings.consumer_group,
        "CRAYFISH_CODEC": settings.codec,
        "CRAYFISH_MODEL": settings.model,
        "CRAYFISH_MODEL_DIR": str(model.model_dir),
        "CRAYFISH_MODEL_ONNX": str(model.onnx) if model.onnx.exists() else "",
        "CRAYFISH_PARALLELISM": str(settings.parallelism),
        "CRAYFISH_WORKER_ID": settings.worker_id,
        "CRAYFISH_READY_FILE": settings.ready_file or "",
        "CRAYFISH_PYTHON": sys.executable,
    }


def command_line(options: CommandOptions, variables: dict[str, str]) -> list[str]:
    """The program's argv, ``${CRAYFISH_*}`` references replaced (others left as written)."""
    return [string.Template(arg).safe_substitute(variables) for arg in options.command]


def program_settings_file(settings: WorkerSettings, options: CommandOptions) -> Path:
    """The program's WorkerSettings: the runner's, with the program's own options as its
    engine_options; written to this service's temporary folder (removed when the service stops)."""
    doc = settings.model_copy(update={"engine_options": dict(options.program_options)})
    fd, path = tempfile.mkstemp(prefix="worker-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(doc.model_dump_json(indent=2))
    return Path(path)


def kafka_properties_file(settings: WorkerSettings) -> Path:
    """The cluster's client properties with their references resolved (``properties_file`` merged
    in), one ``name=value`` line each as librdkafka-based tools read them (values as they are, no
    escapes), for adapters that would rather not resolve references themselves.

    It holds secrets, so it is written with mode 0600 to this service's temporary folder (``TMPDIR``:
    the runner gives every service its own, mode 0700, and removes it when the service stops),
    never to the run folder. A value over several lines (an inline PEM) cannot be written so: it is
    left out, named in a warning, and is still in the settings' ``kafka_client``. Raises
    KafkaClientError naming a property that cannot be resolved."""
    settings.kafka_client.check()
    props = settings.kafka_client.resolved()
    multiline = sorted(k for k, v in props.items() if "\n" in v or "\r" in v)
    if multiline:
        print(f"command worker: warning: {', '.join(multiline)} left out of ${KAFKA_PROPERTIES_ENV} (a value over "
              f"several lines); read it from the settings' kafka_client", file=sys.stderr, flush=True)
    fd, path = tempfile.mkstemp(prefix="kafka-", suffix=".properties")   # created 0600
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# the cluster's Kafka client properties, resolved (librdkafka names); secret: never copy it\n")
        f.writelines(f"{k}={v}\n" for k, v in sorted(props.items()) if k not in multiline)
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    settings, options = read_settings(argv, "python -m sps_workers.command",
                                      "Start any program as the engine (engine: command).", CommandOptions)
    try:
        kafka_properties = kafka_properties_file(settings)
    except KafkaClientError as exc:
        print(f"command worker: bad config: kafka_client: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    variables = adapter_environment(settings, program_settings_file(settings, options), kafka_properties)
    args = command_line(options, variables)
    env = {**os.environ, **variables, **options.env}
    if options.cwd:
        os.chdir(options.cwd)
    try:
        os.execvpe(args[0], args, env)
    except OSError as exc:
        print(f"command worker: cannot start {args[0]!r}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        sys.exit(127)


if __name__ == "__main__":
    main()
