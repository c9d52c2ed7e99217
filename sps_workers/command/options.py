"""``engine_options`` of ``engine: command``: any program, in any language, as the engine."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from sps_workers.options import EngineOptions


class CommandOptions(EngineOptions):
    ENGINE: ClassVar[str] = "command"
    # The conformance suite runs this engine as a command wrapping the baseline Python worker, so
    # the launcher itself (variables, readiness, stop) is proven on every run of the suite.
    CONFORMANCE_OPTIONS: ClassVar[dict] = {
        "command": ["${CRAYFISH_PYTHON}", "-m", "sps_workers.kafka", "--config", "@${CRAYFISH_WORKER_SETTINGS}"]}

    command: list[str] = Field(default_factory=list, description=(
        "The program and its arguments, e.g. [java, -jar, my-job.jar]. ${CRAYFISH_*} references in "
        "the arguments are replaced by the values the program also gets as environment variables "
        "(docs/adapters.md lists them)."))
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables of the program.")
    program_options: dict = Field(default_factory=dict, description=(
        "The program's own options: its settings document carries them as engine_options (the "
        "options above are the launcher's, not the program's)."))
    cwd: str | None = Field(None, description="Working folder of the program (default: the repository root).")
    ready: Literal["group", "file"] = Field("group", description=(
        "When the program counts as ready: `group` = its consumers (group id $CRAYFISH_GROUP_ID) hold "
        "every input partition; `file` = it created $CRAYFISH_READY_FILE."))

    def check(self, parallelism: int) -> CommandOptions:
        if not self.command or not self.command[0].strip():
            raise self.error("command", "required: the program and its arguments, e.g. [java, -jar, my-job.jar]")
        return self

    def readiness(self) -> str:
        return self.ready
