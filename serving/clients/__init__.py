"""Clients for external serving: how a stream-processing worker calls a model server.

Every client speaks one server protocol and offers the same small interface
(:class:`serving.clients.base.ExternalClient`), so every engine can use every server:

    client = create_client("scoring", target="127.0.0.1:50051", model="ffnn", timeout_s=2.0)
    result = client.score(x)                # blocking: ClientResult(output, server_inference_ns, ...)
    future = client.score_async(x)          # pipelined: a concurrent.futures.Future[ClientResult]
    client.close()

Errors are :mod:`serving.errors` exceptions (BadInputError, ModelNotFoundError, OverloadedError,
DeadlineExceededError, BackendError, UnavailableError), whatever the protocol.

Where the clients live: with their server, in ``serving/<pkg>/client.py`` (a server is one
folder: server, launcher, client). This package holds only what they share -- the base class and
:func:`create_client`, which finds the class of a kind through the server registry
(:func:`serving.external.client_spec`: the package whose ``ServerSpec`` names that client kind)
and imports only that module, so an environment without, e.g., the TF Serving stubs can still use
every other client.

Writing a client
----------------
Subclass :class:`ExternalClient` in ``serving/<pkg>/client.py`` (set ``kind`` and ``server``),
implement ``score``, ``health`` and ``describe`` (and ``score_async`` / ``score_stream`` when the
protocol has native async or streaming calls; the defaults run ``score`` on a small thread pool),
and list the class in the module's ``CLIENTS = (...)``. The server's ``ServerSpec(client=kind)``
makes ``create_client(kind, ...)`` find it; the rest of adding a server is in
:mod:`serving.external`.
"""

from __future__ import annotations

import importlib

from serving.clients.base import ClientResult, ExternalClient
from serving.external import client_spec


def client_class(kind: str) -> type[ExternalClient]:
    """The client class of ``kind``: from ``CLIENTS`` of the client module of the server package
    that declares that kind (ValueError naming the known kinds otherwise)."""
    module = client_spec(kind).client_module
    for cls in importlib.import_module(module).CLIENTS:
        if cls.kind == kind:
            return cls
    raise ValueError(f"{module}.CLIENTS has no client of kind {kind!r}")


def create_client(kind: str, target: str, model: str, **options) -> ExternalClient:
    """A client of ``kind`` for ``model`` on the server at ``target`` (options: the class's own)."""
    return client_class(kind)(target, model, **options)


__all__ = ["ClientResult", "ExternalClient", "client_class", "create_client"]
