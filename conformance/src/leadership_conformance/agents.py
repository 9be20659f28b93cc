"""Candidates and followers the suite drives: in separate OS processes (to SIGKILL/SIGSTOP them
like real services) or, for in-process stores such as ``memory``, in threads with the same
interface and the same fault injection (a frozen or abandoned event loop)."""

from __future__ import annotations

import abc
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import leadership
from leadership.testing import crash, dispose, dump_tasks, freeze, is_frozen, thaw

log = logging.getLogger(__name__)

Event = dict[str, Any]


class Agent(abc.ABC):
    """One candidate or follower; records every event with its CLOCK_MONOTONIC time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def _record(self, event: Event) -> None:
        event.setdefault("agent", self.name)
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float, what: str = "", *, after: int = 0) -> Event:
        """The first event (from index ``after``) matching ``predicate``; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[after:]:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{self.name}: no {what or 'matching'} event within {timeout:g}s; events: {self.events}"
                        f"{self.diagnostics()}"
                    )
                self._cond.wait(remaining)

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def wait_elected(self, value: bool, timeout: float, *, after: int = 0) -> Event:
        return self.wait_for(
            lambda e: e["event"] == "elected" and e["value"] is value, timeout, f"elected={value}", after=after
        )

    def elected_values(self) -> list[bool]:
        return [e["value"] for e in self.events if e["event"] == "elected"]

    def errors(self) -> list[Event]:
        return [e for e in self.events if e["event"] == "error"]

    def diagnostics(self) -> str:
        """Extra state for a failure message."""
        return ""

    @abc.abstractmethod
    def command(self, cmd: str) -> None: ...

    def resign(self, timeout: float = 10) -> Event:
        """Resign; the ``resigned`` event's ``token`` is the term given up (None: not leading)."""
        mark = self.mark()
        self.command("resign")
        return self.wait_for(lambda e: e["event"] == "resigned", timeout, "resigned", after=mark)

    def stop(self, timeout: float = 10) -> None:
        mark = self.mark()
        self.command("stop")
        self.wait_for(lambda e: e["event"] == "stopped", timeout, "stopped", after=mark)

    def status(self, timeout: float = 5) -> Event:
        mark = self.mark()
        self.command("status")
        return self.wait_for(lambda e: e["event"] == "status", timeout, "status", after=mark)

    @abc.abstractmethod
    def kill(self) -> None:
        """Die at once without releasing anything (SIGKILL)."""

    @abc.abstractmethod
    def freeze(self) -> None:
        """Stop running, keeping all state (SIGSTOP)."""

    @abc.abstractmethod
    def thaw(self) -> None:
        """Resume after :meth:`freeze` (SIGCONT)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Best-effort teardown."""


class ProcessAgent(Agent):
    def __init__(
        self,
        url: str,
        key: str,
        name: str,
        ttl: float,
        *,
        follower: bool = False,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        super().__init__(name)
        cmd = [sys.executable, "-m", "leadership_conformance.agent", "--url", url, "--key", key]
        cmd += ["--follower"] if follower else ["--name", name, "--ttl", repr(ttl)]
        cmd += extra_args or []  # e.g. --history FILE --sample S
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        self.wait_for(lambda e: e["event"] in ("ready", "error"), ready_timeout, "ready")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self._record(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: unparsable line %r", self.name, line)
        self._record({"t": time.monotonic(), "event": "exited"})

    def diagnostics(self) -> str:
        tail = "\n".join(self.stderr[-40:])
        return f"\n{self.name} stderr (last lines):\n{tail}" if tail else ""

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())

    def command(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            try:
                self.command("stop")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class ThreadAgent(Agent):
    """The same agent in this process, on a Store (and event loop thread) of its own."""

    def __init__(self, url: str, key: str, name: str, ttl: float, *, follower: bool = False) -> None:
        super().__init__(name)
        from .agent import recording_plugin_manager

        self.store = leadership.connect(url, plugin_manager=recording_plugin_manager(self._emit))
        self.candidate = None if follower else leadership.Candidate(self.store, key, name, ttl=ttl)
        self.follower = leadership.Follower(self.store, key) if follower else None
        # follow_election() on a follower of its own, as in agent.py (one consumer per stream).
        self.names = leadership.Follower(self.store, key) if follower else None
        self._thread = threading.Thread(target=self._consume, daemon=True)
        self._thread.start()
        if self.names is not None:
            threading.Thread(target=self._consume_names, args=(self.names,), daemon=True).start()
        self._record({"t": time.monotonic(), "event": "ready"})

    def diagnostics(self) -> str:
        if is_frozen(self.store) or self.store.closed:
            return ""
        try:
            return "\nevent loop tasks:\n" + dump_tasks(self.store, timeout=2)
        except Exception as exc:  # noqa: BLE001
            return f"\n(no task dump: {exc})"

    def _emit(self, event: str, **fields: Any) -> None:
        self._record({"t": time.monotonic(), "event": event, **fields})

    def _consume(self) -> None:
        try:
            if self.candidate is not None:
                for elected in self.candidate.run_for_election():
                    term = self.candidate.term
                    self._emit("elected", value=elected, token=term.token if (elected and term) else None)
            else:
                assert self.follower is not None
                for term in self.follower.terms():
                    self._emit("leader", leader=term.leader if term else None, token=term.token if term else None)
            self._emit("ended")
        except Exception as exc:  # noqa: BLE001
            self._emit("error", error=f"{type(exc).__name__}: {exc}")

    def _consume_names(self, names: leadership.Follower) -> None:
        try:
            for name in names.follow_election():
                self._emit("name", leader=name)
        except Exception as exc:  # noqa: BLE001
            self._emit("error", error=f"follow_election: {type(exc).__name__}: {exc}")

    def command(self, cmd: str) -> None:
        if cmd == "status":
            assert self.candidate is not None
            term = self.candidate.term
            self._emit("status", is_leader=self.candidate.is_leader, token=term.token if term else None)
        elif cmd == "resign":
            assert self.candidate is not None
            term = self.candidate.term
            self.candidate.resign()
            self._emit("resigned", token=term.token if term else None)
        elif cmd == "stop":
            if self.names is not None:
                self.names.stop()
            (self.candidate or self.follower).stop()  # type: ignore[union-attr]
            self._emit("stopped")
        else:
            raise ValueError(cmd)

    def kill(self) -> None:
        crash(self.store)

    def freeze(self) -> None:
        freeze(self.store)

    def thaw(self) -> None:
        thaw(self.store)

    def close(self) -> None:
        if is_frozen(self.store) and not self.store.closed:
            thaw(self.store)
        if not self.store.closed:
            dispose(self.store)
