"""Use a client kind that lives in another environment: a proxy :class:`ExternalClient` whose
calls run in a long-lived subprocess of that environment.

The ``tf-serving`` client needs the TF Serving stubs, i.e. the ``tensorflow`` environment, while
the test suite (and the runner) run in the core env. :class:`ClientHost` starts
``python -m serving.tfserving.remote_client`` with ``python_for(env)``; :meth:`ClientHost.client`
creates the *real* client there (:func:`serving.clients.create_client`) and returns a
:class:`RemoteClient` whose ``score`` / ``score_async`` / ``score_stream`` / ``health`` /
``describe`` / ``close`` are forwarded to it, with results and :mod:`serving.errors`
exceptions coming back as they were raised there. So what is tested is the real client, on the
real wire, just driven from another process::

    with ClientHost("tensorflow") as host:
        c = host.client("tf-serving", "127.0.0.1:8500", "ffnn", timeout_s=2.0)
        c.score(x).output

Transport: the subprocess's stdin/stdout pipes, frames of a 4-byte little-endian length plus a
pickle (numpy arrays travel as pickle-5 buffers). The host runs every call on its own thread
(``score_async`` uses the real client's native future), so pipelined and hung calls don't block
each other; it redirects its fd 1 to stderr so that nothing printed by a library can corrupt the
frame stream. The pipe hop adds ~0.1 ms per call: fine for conformance, **not for
measurements** -- a worker using a client of another environment runs in that environment.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import itertools
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from crayfish.host.envs import python_for
from crayfish.host.paths import REPO_ROOT
from serving.clients import create_client
from serving.clients.base import ExternalClient

_HDR = 4


def _write(stream, lock: threading.Lock, msg: Any) -> None:
    data = pickle.dumps(msg, protocol=5)
    with lock:
        stream.write(len(data).to_bytes(_HDR, "little") + data)
        stream.flush()


def _read(stream) -> Any:
    hdr = stream.read(_HDR)
    if len(hdr) < _HDR:
        raise EOFError
    n = int.from_bytes(hdr, "little")
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError with its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------- proxy (caller side)

class RemoteClient(ExternalClient):
    """An :class:`ExternalClient` whose calls run in a :class:`ClientHost` (see module doc)."""

    def __init__(self, host: "ClientHost", cid: int, kind: str, server: str, target: str, model: str,
                 timeout_s: float):
        self._host = host
        self._cid = cid
        self.kind = kind
        self.server = server
        self.target = target
        self.model = model
        self.timeout_s = timeout_s
        self.max_in_flight = 1
        self._pool = None
        self._closed = False

    def _call(self, method: str, *args: Any, wait: bool = True):
        fut = self._host.request("call", self._cid, method, args)
        if not wait:
            return fut
        # the real client enforces timeout_s; the margin only guards against a dead host
        return fut.result(timeout=self.timeout_s * 4 + 60)

    def score(self, x, traceparent: str | None = None):
        return self._call("score", x)

    def score_async(self, x, traceparent: str | None = None) -> cf.Future:
        return self._call("score_async", x, wait=False)

    def score_stream(self, xs):
        return self._host.request("call", self._cid, "score_stream", (list(xs),)).result(
            timeout=self.timeout_s * max(1, len(xs)) + 60)

    def health(self) -> bool:
        return self._call("health")

    def describe(self) -> dict:
        return self._call("describe")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        self._host.request("call", self._cid, "wait_ready", (timeout_s,)).result(timeout=timeout_s + 60)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._host.alive():
                self._host.request("close", self._cid).result(timeout=30)


class ClientHost:
    """A subprocess of environment ``env`` holding real clients (see the module docstring)."""

    def __init__(self, env: str = "tensorflow", log_path: Path | None = None,
                 preload: tuple[str, ...] = ("serving.tfserving.client",), ready_timeout_s: float = 300.0):
        self.env = env
        self._log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL
        environ = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environ.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [python_for(env), "-m", "serving.tfserving.remote_client", *preload],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=REPO_ROOT, env=environ)
        self._wlock = threading.Lock()
        self._plock = threading.Lock()
        self._pending: dict[int, cf.Future] = {}
        self._ids = itertools.count(1)
        self._dead: BaseException | None = None
        ready = self._register(0)
        self._reader = threading.Thread(target=self._read_loop, name=f"client-host-{env}", daemon=True)
        self._reader.start()
        try:
            self.pid = ready.result(timeout=ready_timeout_s)
        except BaseException:
            self.close()
            raise

    def _register(self, rid: int) -> cf.Future:
        fut: cf.Future = cf.Future()
        with self._plock:
            if self._dead is not None:
                fut.set_exception(self._dead)
                return fut
            self._pending[rid] = fut
        return fut

    def _read_loop(self) -> None:
        try:
            while True:
                status, rid, value = _read(self.proc.stdout)
                with self._plock:
                    fut = self._pending.pop(rid, None)
                if fut is None or fut.done():   # unknown, or cancelled by the caller
                    continue
                if status == "ok":
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
        except BaseException as exc:  # noqa: BLE001 - EOF (host ended) or a broken frame
            err = RuntimeError(f"client host ({self.env}) ended: {type(exc).__name__} "
                               f"(exit code {self.proc.poll()})")
        with self._plock:
            self._dead = err
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            fut.set_exception(err)

    def alive(self) -> bool:
        return self._dead is None and self.proc.poll() is None

    def request(self, op: str, *args: Any) -> cf.Future:
        rid = next(self._ids)
        fut = self._register(rid)
        if not fut.done():
            try:
                _write(self.proc.stdin, self._wlock, (op, rid, *args))
            except (OSError, ValueError) as exc:
                with self._plock:
                    self._pending.pop(rid, None)
                fut.set_exception(RuntimeError(f"client host ({self.env}) is gone: {exc}"))
        return fut

    def client(self, kind: str, target: str, model: str, timeout_s: float = 5.0, **options: Any) -> RemoteClient:
        """The real ``create_client(kind, target, model, timeout_s=..., **options)`` in the host."""
        cid = next(self._ids)
        server = self.request("new", cid, kind, target, model, {"timeout_s": timeout_s, **options}).result(timeout=120)
        return RemoteClient(self, cid, kind, server, target, model, timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()   # EOF: the host closes its clients and exits
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def __enter__(self) -> "ClientHost":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ host side

def _serve(preload: list[str]) -> int:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                       # stray prints go to stderr, never into the frames
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    lock = threading.Lock()
    for module in preload:              # pay the heavy imports (TensorFlow) before "ready"
        importlib.import_module(module)

    clients: dict[int, ExternalClient] = {}
    pool = cf.ThreadPoolExecutor(max_workers=64, thread_name_prefix="remote-call")

    def reply(rid: int, fn, *args) -> None:
        try:
            value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - sent back to the caller
            _write(out, lock, ("err", rid, _portable(exc)))
        else:
            _write(out, lock, ("ok", rid, value))

    def forward(rid: int, fut: cf.Future) -> None:
        exc = fut.exception()
        _write(out, lock, ("err", rid, _portable(exc)) if exc is not None else ("ok", rid, fut.result()))

    _write(out, lock, ("ok", 0, os.getpid()))
    while True:
        try:
            op, rid, *args = _read(inp)
        except EOFError:
            break
        if op == "new":
            cid, kind, target, model, opts = args

            def make(cid=cid, kind=kind, target=target, model=model, opts=opts):
                clients[cid] = create_client(kind, target, model, **opts)
                return clients[cid].server

            reply(rid, make)
        elif op == "call":
            cid, method, margs = args
            client = clients.get(cid)
            if client is None:
                _write(out, lock, ("err", rid, RuntimeError(f"no client {cid} (closed?)")))
            elif method == "score_async":
                try:
                    client.score_async(*margs).add_done_callback(lambda f, rid=rid: forward(rid, f))
                except BaseException as exc:  # noqa: BLE001
                    _write(out, lock, ("err", rid, _portable(exc)))
            else:
                pool.submit(reply, rid, getattr(client, method), *margs)
        elif op == "close":
            client = clients.pop(args[0], None)
            reply(rid, client.close if client is not None else (lambda: None))
        else:
            _write(out, lock, ("err", rid, ValueError(f"unknown op {op!r}")))
    for client in clients.values():
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass
    pool.shutdown(wait=False, cancel_futures=True)
    return 0


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]))
