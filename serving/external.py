"""External model servers the mesh can start and call: the registry, one line per server package.

Every package in :data:`SERVER_PACKAGES` declares its :class:`serving.server.ServerSpec` (s) in
its ``__init__`` (``SERVERS = (...)``); :data:`SERVERS` maps every declared name (what experiment
files give as ``serving.server``) to its spec, read when asked, so the list is the only place a
server is named.

Adding a server
---------------
1. Make one folder, a package ``serving/<pkg>/`` (or any importable package), holding:

   - ``__init__.py`` with ``SERVERS = (ServerSpec("<name>", client="<kind>"),)`` (worker_env /
     runs_backend if they differ from the defaults: see :class:`ServerSpec`), importing nothing
     heavy (it is imported wherever experiment files are checked);
   - ``launcher.py`` with ``start(model, instances, models_dir, log_dir, **options)`` that starts
     the real server as its own process (:class:`crayfish.host.procs.Service`), waits until it
     really serves (health, not a sleep) and returns a :class:`serving.server.RunningServer`
     whose ``targets`` has an entry for ``<kind>`` and whose ``server`` is the name the server's
     answers carry;
   - ``client.py`` with the client of ``<kind>``: a :class:`serving.clients.ExternalClient`
     subclass with ``kind = "<kind>"``, listed in the module's ``CLIENTS = (...)`` (see
     :mod:`serving.clients` for its contract); :func:`serving.clients.create_client` finds it
     there;
   - the server process itself, if it is ours (e.g. ``server.py`` / ``__main__.py``).

2. Add the package's name to :data:`SERVER_PACKAGES` below: one line.

3. Pass ``tests/support/conformance_serving.py``: a ``tests/integration/serving/test_serving_<pkg>.py`` with a ``served``
   fixture that starts the server with ``serving.external.start_server`` (or the launcher) and
   makes clients with ``create_client``, then ``from tests.support.conformance_serving import *``.

``tests/integration/serving/test_extension_serving.py`` does exactly these steps with a throwaway package in a
temporary folder (its one line: that package's name appended to :data:`SERVER_PACKAGES`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from serving.embedded import BACKENDS
from serving.server import RunningServer, ServerSpec

# The server packages, one line each.
SERVER_PACKAGES: list[str] = [
    "serving.scoring",
    "serving.tfserving",
    "serving.triton",
    "serving.torchserve",
    "serving.rayserve",
]


def _declared() -> dict[str, ServerSpec]:
    table: dict[str, ServerSpec] = {}
    for package in SERVER_PACKAGES:
        for spec in importlib.import_module(package).SERVERS:
            if spec.name in table:
                raise ValueError(f"external server {spec.name!r} declared twice "
                                 f"({table[spec.name].package}, {package})")
            table[spec.name] = ServerSpec(spec.name, spec.client, spec.worker_env, spec.runs_backend,
                                          package=package)
    return table


class _Servers(Mapping[str, ServerSpec]):
    """name -> spec of every server in :data:`SERVER_PACKAGES`, read when asked."""

    def __getitem__(self, name: str) -> ServerSpec:
        return _declared()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_declared())

    def __len__(self) -> int:
        return len(_declared())


SERVERS: Mapping[str, ServerSpec] = _Servers()


def server_spec(name: str) -> ServerSpec:
    try:
        return SERVERS[name]
    except KeyError:
        raise ValueError(f"unknown external server {name!r}; known: {', '.join(SERVERS)}") from None


def client_spec(kind: str) -> ServerSpec:
    """The first server whose clients are of ``kind`` (its package holds the client class)."""
    for spec in SERVERS.values():
        if spec.client == kind:
            return spec
    known = sorted({s.client for s in SERVERS.values()})
    raise ValueError(f"unknown external serving client {kind!r}; known: {', '.join(known)}")


def available(name: str) -> bool:
    """Whether this checkout has the server's launcher."""
    try:
        importlib.import_module(server_spec(name).launcher_module)
        return True
    except ModuleNotFoundError:
        return False


def start_server(name: str, **kwargs) -> RunningServer:
    """Start server ``name`` with its launcher (``model``, ``instances``, ``models_dir``,
    ``log_dir`` and the launcher's own options)."""
    return importlib.import_module(server_spec(name).launcher_module).start(**kwargs)


# -- kept for the runner and the stack: the backend's own declarations (serving.embedded) ----------

def backend_env(name: str) -> str:
    """The environment embedded backend ``name`` runs in (``serving.embedded.backend(name).environment``;
    ``core`` for a name no backend has: the process started there names the error)."""
    cls = BACKENDS.get(name)
    return cls.environment if cls is not None else "core"


def export_for_backend(name: str, model: str, models_dir: Path | str, seed: int = 42, log=print) -> None:
    """Write backend ``name``'s model files (``serving.embedded.backend(name).export``; nothing for
    an unknown name)."""
    cls = BACKENDS.get(name)
    if cls is not None:
        cls.export(model, models_dir, seed=seed, log=log)


__all__ = ["SERVER_PACKAGES", "SERVERS", "ServerSpec", "RunningServer", "server_spec", "client_spec",
           "available", "start_server", "backend_env", "export_for_backend"]
