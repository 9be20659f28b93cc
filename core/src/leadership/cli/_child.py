"""The supervised command: started in its own process group, and killed with ``leadership run``
even when ``run`` itself is killed (SIGKILL, OOM) and cannot act.

Two guards, because neither covers everything alone:

* the command's own process gets ``PR_SET_PDEATHSIG`` = SIGKILL (Linux), so the kernel kills it
  the moment ``run`` dies; a check of the parent pid right after covers ``run`` dying before the
  ``prctl`` call;
* a tiny watchdog process, started before the first command, holds the read end of a pipe only
  ``run`` writes to; when ``run`` dies the pipe reads end-of-file and the watchdog kills the
  command's whole group (grandchildren a shell or a worker pool started, which the death signal
  does not reach).

Both are set up by a small launcher that ``run`` starts in the command's place and that then
execs the command: not by a ``preexec_fn``, whose Python code between fork and exec crashed the
child (SIGSEGV) while gRPC threads (the etcd backend's) were busy in ``run``.

A *frozen* ``run`` (SIGSTOP, a stalled VM) kills nothing: its child keeps running while the store
may elect someone else. The child's defence is ``LEADERSHIP_TOKEN``: hand it to every downstream
system, which rejects a token lower than the highest it has seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

# Runs as its own process (no fork hazards), in the command's new process group: sets the death
# signal, registers the group with the watchdog, then becomes the command.
_LAUNCHER = """\
import os, signal, sys
parent, watchdog, command = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != parent:  # run died before the death signal was set
    os._exit(128 + signal.SIGKILL)
os.write(watchdog, b"+%d\\n" % os.getpid())
os.close(watchdog)
try:
    os.execvp(command[0], command)
except OSError as exc:
    sys.stderr.write("leadership run: cannot start %s: %s\\n" % (command[0], exc))
    os._exit(127)
"""

# Ignores the signals a terminal or an init system sends to run's whole group: only the end of
# run (end-of-file on its pipe) ends it. Reads "+PGID" and "-PGID" lines: the groups to kill.
_WATCHDOG = """\
import os, signal
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(s, signal.SIG_IGN)
groups, pending = set(), b""
while True:
    try:
        chunk = os.read(0, 512)
    except InterruptedError:
        continue
    if not chunk:
        break
    pending += chunk
    *lines, pending = pending.split(b"\\n")
    for line in lines:
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""


class Watchdog:
    """One per ``leadership run``: kills the registered process groups when ``run`` dies."""

    def __init__(self) -> None:
        read, self._pipe = os.pipe()  # close-on-exec: no command run later inherits the write end
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG], stdin=read, stdout=subprocess.DEVNULL, close_fds=True
            )
        finally:
            os.close(read)

    @property
    def fd(self) -> int:
        """The write end, for the command's process to register its group before it execs."""
        return self._pipe

    def release(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

    def _send(self, line: str) -> None:
        if self._pipe >= 0:
            with contextlib.suppress(OSError):
                os.write(self._pipe, line.encode())

    def close(self) -> None:
        """Every group released first: at end-of-file the watchdog kills what is still listed."""
        if self._pipe >= 0:
            os.close(self._pipe)
            self._pipe = -1
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None


def exit_status(returncode: int) -> int:
    """A shell's convention: 128 + N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class Child:
    """One run of the command."""

    def __init__(self, proc: asyncio.subprocess.Process, watchdog: Watchdog) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pgid = proc.pid  # its own group, led by itself
        self.started = time.monotonic()
        self._watchdog: Watchdog | None = watchdog

    @classmethod
    async def start(cls, command: Sequence[str], env: Mapping[str, str], watchdog: Watchdog) -> Child:
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), str(watchdog.fd)]
        proc = await asyncio.create_subprocess_exec(
            *launcher, *command, env=dict(env), pass_fds=(watchdog.fd,), start_new_session=True
        )
        return cls(proc, watchdog)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    async def wait(self) -> int:
        """Wait for the command's process; then kill what it left in its group. Returns the exit
        status (128 + N when killed by signal N)."""
        returncode = await self.proc.wait()
        # Background processes the command left behind must not keep working either.
        self.signal_group(signal.SIGKILL)
        self._dismiss_watchdog()
        return exit_status(returncode)

    async def stop(self, kill_at: float, first: int = signal.SIGTERM) -> tuple[int, bool]:
        """Send ``first`` to the group now and SIGKILL at ``kill_at`` (monotonic) if it is still
        running. Returns (exit status, whether SIGKILL was needed)."""
        killed = False
        if self.proc.returncode is None:
            if kill_at > time.monotonic():
                self.signal_group(first)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.proc.wait()), kill_at - time.monotonic())
            if self.proc.returncode is None:
                killed = True
                self.signal_group(signal.SIGKILL)
        return await self.wait(), killed

    def _dismiss_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.release(self.pgid)
            self._watchdog = None


class KillSwitch:
    """SIGKILLs a process group at a set monotonic time, from a thread of its own.

    ``run`` arms it while its command runs with the moment the command must be dead if no
    refresh confirms the session again (re-armed after each confirmed refresh), so the kill does
    not wait for the event loop to notice the loss: a loop slowed by load or a long callback
    still kills in time. Only a stopped process (SIGSTOP) stops it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._target: tuple[int, float] | None = None
        self._closed = False
        self.fired_at: float | None = None
        self._thread = threading.Thread(target=self._main, name="leadership-run-killswitch", daemon=True)
        self._thread.start()

    def arm(self, pgid: int, at: float) -> None:
        with self._cond:
            self._target = (pgid, at)
            self.fired_at = None
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._target = None
            self.fired_at = None
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _main(self) -> None:
        with self._cond:
            while not self._closed:
                if self._target is None:
                    self._cond.wait()
                    continue
                pgid, at = self._target
                delay = at - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                self.fired_at = time.monotonic()
                self._target = None
