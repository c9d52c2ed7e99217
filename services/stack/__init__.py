"""The native stack (``make up`` / ``make down`` / ``make ps`` / ``make logs``): the long-running
Crayfish Mesh services as local processes, for machines without a Docker engine.

    .venv/bin/python -m services.stack up   [--config compose/native/stack.yaml] [--dir DIR]
    .venv/bin/python -m services.stack ps   [--check]
    .venv/bin/python -m services.stack logs [SERVICE] [-n 40] [-f]
    .venv/bin/python -m services.stack down

It is the counterpart of compose/core.yaml + the Jaeger of compose/observability.yaml, with the
same service names: ``kafka``, ``jaeger``, ``scoring``, ``kafka-worker``, ``collector``.

    settings.py      StackSettings, read from compose/native/stack.yaml
    declarations.py  the stack as a list of declared services: name, build, launch, ports,
                     health check, dependencies (add a service here)
    supervisor.py    up / down: one generic loop over the declarations
    health.py        the health checks (up and ps)
    processes.py     a service's record <-> its live processes (crayfish.host.procs), ports
    state.py         the state file, stack.json (read by ``crayfish run --stack``)
    status.py        ps and the summary of up
    logs.py          logs [-f]

User guide: docs/stack.md. This package's own imports stay light (settings, state): the runner
imports it for ``--stack``.
"""

from services.stack.settings import StackSettings, load_settings
from services.stack.state import StackError, stack_endpoints

__all__ = ["StackSettings", "load_settings", "StackError", "stack_endpoints"]
