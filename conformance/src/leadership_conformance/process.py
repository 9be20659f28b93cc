"""Throw-away stores run as local processes, for a store a plugin author starts itself (a
PostgreSQL from the distribution's binaries, an etcd binary, ...), without Docker.

A plugin subclasses :class:`ProcessServer`, defines the probes of :class:`StoreServer` and
:meth:`ProcessServer.command`, and starts it with :meth:`ProcessServer.launch`::

    class MyStoreServer(ProcessServer):
        scheme = "mystore"

        def command(self, member):
            return ["mystore", f"--port={member.port}", f"--data={self.workdir / member.name}"]

        def check_serving(self, member):
            socket.create_connection((member.host, member.port), timeout=PROBE_TIMEOUT).close()

        @classmethod
        def start(cls, members=1):
            ports = free_ports(members)
            return cls([Member(i, f"m{i}", "127.0.0.1", p) for i, p in enumerate(ports)]).launch()

Faults are signals: ``pause`` is SIGSTOP, ``unpause`` SIGCONT, ``restart`` SIGTERM (SIGKILL
after ``stop_timeout``) then the same command again, ``kill_member`` SIGKILL. A member's output
goes to ``<workdir>/<name>.log``, whose tail a start failure quotes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from .servers import Member, ServerStartError, StoreServer

__all__ = ["ProcessServer"]

logger = logging.getLogger(__name__)

_P = TypeVar("_P", bound="ProcessServer")


class ProcessServer(StoreServer):
    """A store whose members are local processes (``Member.handle`` is the ``Popen``)."""

    #: Seconds a member may take to exit after SIGTERM before it is killed.
    stop_timeout: float = 10.0

    def __init__(self, members: Sequence[Member], *, url: str | None = None, workdir: Path | None = None) -> None:
        super().__init__(members, url=url)
        self._own_workdir = workdir is None
        #: Where members keep their data and logs; kept across restarts, removed by stop().
        self.workdir = Path(tempfile.mkdtemp(prefix=f"leadership-{self.scheme}-")) if workdir is None else workdir

    # -- what a store defines

    def command(self, member: Member) -> list[str]:
        """The argv that starts ``member`` with its data in :attr:`workdir` (the same argv
        restarts it: the data must survive)."""
        raise NotImplementedError(f"{type(self).__name__} must define command(member)")

    def environment(self, member: Member) -> Mapping[str, str] | None:
        """Extra environment for ``member``'s process (None: inherit the test's)."""
        return None

    # -- lifecycle

    def launch(self: _P) -> _P:
        """Start every member and wait until all serve; on failure stop them and raise."""
        try:
            self._start_members(self.members)
        except BaseException:
            self.stop()
            raise
        self.can_inject_faults = True
        logger.info("started %r", self)
        return self

    def _spawn(self, member: Member) -> None:
        log = open(self.workdir / f"{member.name}.log", "ab")  # noqa: SIM115 - the child keeps it
        env = self.environment(member)
        try:
            member.handle = subprocess.Popen(
                self.command(member),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if env is None else {**os.environ, **env},
                start_new_session=True,  # a Ctrl-C of the test run does not reach it first
            )
        finally:
            log.close()
        member.running = True
        member.probes = 0
        member.requests.rebase()

    def _start_members(self, members: Sequence[Member]) -> None:
        for member in members:
            self._spawn(member)
        self.wait_serving(members)

    def _signal(self, member: Member, sig: signal.Signals) -> None:
        process: subprocess.Popen[bytes] | None = member.handle
        if process is not None and process.poll() is None:
            process.send_signal(sig)

    def _end(self, member: Member, sig: signal.Signals) -> None:
        """Send ``sig`` and reap the process (SIGKILL after stop_timeout)."""
        process: subprocess.Popen[bytes] | None = member.handle
        if process is None:
            return
        self._signal(member, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self._signal(member, sig)
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        member.running = False

    def _check_faults(self) -> None:
        if not self.can_inject_faults:
            raise self._refuse("inject faults")
        if self._stopped:
            raise RuntimeError(f"{self!r} was stopped")

    def pause(self) -> None:
        self._check_faults()
        for member in self.members:
            self._signal(member, signal.SIGSTOP)
        self._paused = True
        logger.info("paused %s", self.url)

    def unpause(self) -> None:
        self._check_faults()
        for member in self.members:
            self._signal(member, signal.SIGCONT)
        self._paused = False
        logger.info("unpaused %s", self.url)

    def restart(self) -> None:
        self._check_faults()
        self._paused = False
        for member in self.members:
            self._fold_requests(member)
            self._end(member, signal.SIGTERM)
        self._start_members(self.members)

    def kill_member(self, index: int) -> None:
        self._check_faults()
        member = self.members[index]
        if member.running:
            self._fold_requests(member)
            self._end(member, signal.SIGKILL)
            logger.info("killed member %d (%s) of %s", index, member.name, self.url)

    def start_member(self, index: int) -> None:
        self._check_faults()
        if not self.members[index].running:
            self._start_members([self.members[index]])

    def _fail_if_exited(self, member: Member) -> None:
        process: subprocess.Popen[bytes] | None = member.handle
        if process is not None and process.poll() is not None:
            member.running = False
            raise ServerStartError(
                f"{self.scheme} member {member.index} ({member.address}) exited with code {process.returncode}"
                + self._logs_for_error(member)
            )

    def _logs_for_error(self, member: Member, lines: int = 60) -> str:
        path = self.workdir / f"{member.name}.log"
        try:
            tail = path.read_text("utf-8", "replace").splitlines()[-lines:]
        except OSError as exc:
            return f"\n--- no log for {member.name}: {exc}"
        return f"\n--- last {lines} log lines of {member.name}:\n" + "\n".join(tail)

    def stop(self) -> None:
        """End every member (SIGTERM, then SIGKILL) and remove the work dir if the handle made
        it. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for member in self.members:
            with contextlib.suppress(OSError):
                self._end(member, signal.SIGTERM)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
