"""A process's side of a run it joined from another host (the protocol: :mod:`crayfish.run_control`).

:class:`JoinedRun` finds the run by its id, claims a part, and watches the control topic in a thread
of its own: it learns its part from the claims' order, the start (the schedule's origin), the stop
and an abort. The generator and the collector (``services.generator.joined``,
``services.collector.joined``) drive their work between :meth:`claim` and :meth:`publish`.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Mapping

from crayfish.kafka_client import KafkaClient
from crayfish.run_control import ControlChannel, RunControlError, assign_parts, find_run

CLAIM_TIMEOUT_S = 30.0
START_GRACE_S = 30.0    # beyond the plan's join timeout: the runner has failed the point by then


class Refused(RunControlError):
    """Every part of this role is taken: the process is not needed."""


class JoinedRun:
    def __init__(self, run_id: str, role: str, bootstrap: str, client: KafkaClient | None, host: str | None = None):
        self.run_id, self.role = run_id, role
        self.plan = find_run(bootstrap, client, run_id)
        self.parts = int(self.plan[f"{role}s"])
        self.host = host or socket.gethostname()
        self.member = uuid.uuid4().hex[:12]
        self.channel = ControlChannel(bootstrap, client, self.plan["control_topic"])
        self.part: int | None = None
        self.aborted: str | None = None
        self.start_at_ns: int | None = None
        self.on_stop: Callable[[], None] = lambda: None    # the runner's stop (collectors)
        self.on_abort: Callable[[], None] = lambda: None   # the runner's abort, or the run gone
        self._decided, self._started, self._done = threading.Event(), threading.Event(), threading.Event()
        self._claims: list = []
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="control-watch")

    # ------------------------------------------------------------------ the process's steps

    def claim(self) -> int:
        """Claim a part -> its index; :class:`Refused` when the run has all it needs of this role."""
        self.channel.send("claim", role=self.role, member=self.member, host=self.host)
        self._watcher.start()
        if not self._decided.wait(CLAIM_TIMEOUT_S):
            raise RunControlError(f"run {self.run_id}: this {self.role}'s claim did not come back within "
                                  f"{CLAIM_TIMEOUT_S:.0f} s")
        self._raise_if_aborted()
        if self.part is None:
            raise Refused(f"run {self.run_id} has its {self.parts} {self.role}(s) already: this one is not needed")
        return self.part

    def ready(self, **fields) -> None:
        self._send("ready", **fields)

    def wait_start(self) -> int:
        """Wait for the runner's start -> the schedule's origin (ns, the runner's wall clock)."""
        limit = float(self.plan.get("join_timeout_s", 120)) + START_GRACE_S
        if not self._started.wait(limit):
            raise RunControlError(f"run {self.run_id} did not start within {limit:.0f} s")
        self._raise_if_aborted()
        return int(self.start_at_ns)

    def when_stopped(self, callback: Callable[[], None]) -> None:
        """``callback`` on the runner's stop or abort (at once when the abort came already)."""
        self.on_stop = self.on_abort = callback
        if self.aborted is not None:
            callback()

    def progress(self, completed: int) -> None:
        self._send("progress", completed=int(completed))

    def publish(self, report: Mapping, files: Mapping[str, bytes]) -> None:
        """The part's files (chunked), then its result."""
        self._raise_if_aborted()
        self.channel.send_files(self.member, files)
        self._send("result", report=dict(report), files=list(files))

    def fail(self, error: str) -> None:
        """Tell the runner this part failed (best effort: the run may be gone already)."""
        if self.part is None or self.aborted is not None:
            return
        try:
            self._send("error", error=error[:500])
        except RunControlError:
            pass

    def close(self) -> None:
        self._done.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=5)
        self.channel.close()

    # ------------------------------------------------------------------ internals

    def _send(self, kind: str, **fields) -> None:
        self.channel.send(kind, member=self.member, role=self.role, part=self.part, host=self.host, **fields)

    def _raise_if_aborted(self) -> None:
        if self.aborted is not None:
            raise RunControlError(f"run {self.run_id} was aborted by the runner: {self.aborted}")

    def _watch(self) -> None:
        """Read the control topic from its start: the claims up to ours decide our part; then start,
        stop (``on_stop``) and abort (wakes whoever waits, then ``on_abort``)."""
        while not self._done.is_set():
            try:
                msgs = self.channel.poll(0.2)
            except RunControlError as exc:   # the topic is gone: the run is over
                self._abort(str(exc))
                return
            for m in msgs:
                if m.kind == "claim" and not self._decided.is_set():
                    self._claims.append(m)
                    if m.get("member") == self.member:
                        self.part = assign_parts(self._claims, {self.role: self.parts}).get(self.member, (None, None))[1]
                        self._decided.set()
                elif m.kind == "start":
                    self.start_at_ns = int(m["start_at_ns"])
                    self._started.set()
                elif m.kind == "stop":
                    self.on_stop()
                elif m.kind == "abort":
                    self._abort(m.get("reason") or "no reason given")
                    return

    def _abort(self, reason: str) -> None:
        self.aborted = reason
        for e in (self._decided, self._started):
            e.set()
        self.on_abort()
