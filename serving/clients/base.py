"""The client interface every external-serving protocol implements."""

from __future__ import annotations

import concurrent.futures as cf
import time
from dataclasses import dataclass

import grpc
import numpy as np


@dataclass
class ClientResult:
    # An array, or {output name: array} when the request was named or the model has several outputs.
    output: np.ndarray | dict
    # What the server reports about itself (0 when the protocol does not say).
    server_inference_ns: int = 0
    server_queue_ns: int = 0
    # Which server actually answered, e.g. "crayfish-scoring", "crayfish-scoring (tf-serving protocol)".
    server: str = ""


class ExternalClient:
    """One connection to one model on one server; see :mod:`serving.clients` for the contract."""

    kind: str = ""          # the client kind a ServerSpec names (serving.server.ServerSpec.client)
    server: str = ""        # default answer to "which server answered"

    def __init__(self, target: str, model: str, timeout_s: float = 5.0, max_in_flight: int = 1, **options):
        if options:
            raise ValueError(f"{self.kind} client: unknown option(s) {', '.join(sorted(options))}")
        self.target = target
        self.model = model
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self._pool: cf.ThreadPoolExecutor | None = None

    def score(self, x: np.ndarray, traceparent: str | None = None) -> ClientResult:
        """Score ``x``: an array, or ``{input name: array}`` (the named-tensor contract,
        serving.models.spec). ``traceparent``: W3C context of the caller's client span (sampled batches
        only); protocols that carry it (gRPC metadata / HTTP header) send it, servers we own
        record their spans under it, the others ignore it."""
        raise NotImplementedError

    def score_async(self, x: np.ndarray, traceparent: str | None = None) -> cf.Future:
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(max_workers=max(1, self.max_in_flight),
                                               thread_name_prefix=f"{self.kind}-client")
        return self._pool.submit(self.score, x, traceparent)

    def score_stream(self, xs: list[np.ndarray]) -> list[ClientResult]:
        """Score many inputs over the protocol's streaming API where it has one; results in input
        order. Default: pipelined unary calls."""
        return [f.result() for f in [self.score_async(x) for x in xs]]

    def health(self) -> bool:
        """True when the server says it can serve this client's model."""
        raise NotImplementedError

    def describe(self) -> dict:
        """{"inputs": [{"name", "dtype", "shape"}], "outputs": [...]} as the server reports them
        (-1 or None for a dynamic dimension)."""
        raise NotImplementedError

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until :meth:`health` is true (raises TimeoutError)."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if self.health():
                    return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"{self.kind} server at {self.target} not ready after {timeout_s:.0f}s ({last})")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def grpc_channel(target: str, max_message_bytes: int, root_cert_file: str | None = None):
    """A gRPC channel for a serving client: large messages both ways, TLS when a root certificate
    is given."""
    opts = [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)]
    if root_cert_file:
        with open(root_cert_file, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        return grpc.secure_channel(target, creds, options=opts)
    return grpc.insecure_channel(target, options=opts)
