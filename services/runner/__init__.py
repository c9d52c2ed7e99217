"""The runner: experiment files, orchestration of broker/worker/collector/generator, the CLI."""
