"""The native stack (``make up`` / ``make down`` / ``make ps`` / ``make logs``): the long-running
Crayfish Mesh services as local processes, for machines without a Docker engine.

    .venv/bin/python -m services.stack up   [--config compose/native/stack.yaml] [--dir DIR]
    .venv/bin/python -m services.stack ps   [--check]
    .venv/bin/python -m services.stack logs [SERVICE] [-n 40] [-f]
    .venv/bin/python -m services.stack down

It is the counterpart of compose/core.yaml + the Jaeger of compose/observability.yaml, with the
same service names: ``kafka``, ``jaeger``, ``scoring``, ``kafka-worker``, ``collector``. Settings:
:class:`services.stack.settings.StackSettings` (compose/native/stack.yaml); processes, health
checks and the state file: :mod:`services.stack.supervisor`; user guide: docs/stack.md.
"""

from services.stack.settings import StackSettings, load_settings
from services.stack.supervisor import StackError, stack_endpoints

__all__ = ["StackSettings", "load_settings", "StackError", "stack_endpoints"]
