"""What every external server package declares (:class:`ServerSpec`) and what every launcher
returns (:class:`RunningServer`): one type the runner, the tests and the stack read the same way,
whichever server it is.

A server package (``serving/<pkg>/``) lists its specs in its ``__init__``::

    SERVERS = (ServerSpec("triton", client="triton"),)

and its ``launcher.start(model, instances, models_dir, log_dir, **options)`` returns a
:class:`RunningServer`. The registry (:mod:`serving.external`) reads ``SERVERS`` of every package
it lists; see there for the checklist of adding a server.

This module imports nothing but the standard library: every environment imports it (a server
package's ``__init__`` runs in the server's own environment too, e.g. ``triton``, which has no
psutil for :mod:`crayfish.host.procs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # the type only: procs needs psutil, which not every environment has
    from crayfish.host.procs import Service


@dataclass(frozen=True)
class ServerSpec:
    """One name an experiment file can give as ``serving.server``.

    ``client``: the client kind the workers call it with; the class lives in the declaring
    package's ``client.py`` (its ``CLIENTS``). ``worker_env``: the environment whose packages
    include that client (a worker using it runs there). ``runs_backend``: the server runs the
    experiment's embedded backend (``serving.backend`` and its options, ``serving.batching``), so
    its launcher takes ``backend``, ``backend_options``, ``batching``, ``python`` (the backend's
    environment) and ``env``. ``package``: filled in by the registry with the declaring package
    (``launcher`` and ``client`` modules are found there).
    """

    name: str
    client: str
    worker_env: str = "core"
    runs_backend: bool = False
    package: str = ""

    @property
    def launcher_module(self) -> str:
        return f"{self.package}.launcher"

    @property
    def client_module(self) -> str:
        return f"{self.package}.client"


@dataclass
class RunningServer:
    """A started external server.

    ``server``: the name the server gives itself, what its answers carry
    (``ClientResult.server``, ``answered_by`` in results). ``targets``: ``host:port`` per client
    kind it answers (Ray Serve: HTTP and gRPC); the first entry is the default, :attr:`kind` /
    :attr:`target`. ``service``: the server's process tree (resource sampling, :meth:`stop`).
    ``info``: server-specific facts (ports, run folders, key files, versions) for tests and logs.

    :meth:`stop` stops the whole process tree (``stop_timeout_s``; ``leader_first``: SIGTERM the
    leader alone first, for servers that shut their children down themselves), then runs
    ``cleanup`` (leftover files, shared memory) in order; it is idempotent. :meth:`stats` returns
    what ``stats_reader`` reads (``{}`` without one or once stopped).
    """

    server: str
    targets: dict[str, str]
    service: Service | None = None
    models: list[str] = field(default_factory=list)
    log_path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    stop_timeout_s: float = 30.0
    leader_first: bool = False
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    stats_reader: Callable[[], dict] | None = None

    @property
    def kind(self) -> str:
        """The default client kind (the first of :attr:`targets`)."""
        return next(iter(self.targets))

    @property
    def target(self) -> str:
        """``host:port`` for :attr:`kind`."""
        return self.targets[self.kind]

    def stats(self) -> dict:
        if self.stats_reader is None or self.service is None:
            return {}
        return self.stats_reader()

    def stop(self) -> None:
        service, self.service = self.service, None
        cleanup, self.cleanup = self.cleanup, []
        try:
            if service is not None:
                service.stop(self.stop_timeout_s, leader_first=self.leader_first)
        finally:
            for fn in cleanup:
                fn()


__all__ = ["ServerSpec", "RunningServer"]
