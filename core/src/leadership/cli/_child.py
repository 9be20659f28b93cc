"""The supervised command: started in its own process group, and killed with ``leadership run``
even when ``run`` itself is killed (SIGKILL, OOM) and cannot act.

Two guards, because neither covers everything alone:

* the command's own process gets ``PR_SET_PDEATHSIG`` = SIGKILL (Linux), so the kernel kills it
  the moment ``run`` dies; a check of the parent pid right after covers ``run`` dying before the
  ``prctl`` call;
* a tiny watchdog process, started before the first command, holds the read end of a pipe only
  ``run`` writes to; when ``run`` dies the pipe reads end-of-file and the watchdog kills the
  command's whole group (grandchildren a shell or a
  worker pool started, which the death signal does not reach).

A *frozen* ``run`` (SIGSTOP, a stalled VM) kills nothing: its child keeps running while the store
may elect someone else. The child's defence is ``LEADERSHIP_TOKEN``: hand it to every downstream
system, which rejects a token lower than the highest it has seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

#: From <linux/prctl.h>.
PR_SET_PDEATHSIG = 1

_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    # Loaded here, in the parent: the child between fork and exec must not load libraries.
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(None, use_errno=True)

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


def _preexec(parent: int, watchdog: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec: system calls only
        os.setpgid(0, 0)
        # The child registers its own group before it execs: no window in which the command
        # could start processes the watchdog does not know of. (The pipe is close-on-exec.)
        os.write(watchdog, b"+%d\n" % os.getpid())
        if _libc is not None:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # run died before prctl took effect
            os._exit(128 + signal.SIGKILL)

    return setup


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
        setup = _preexec(os.getpid(), watchdog.fd)
        proc = await asyncio.create_subprocess_exec(*command, env=dict(env), preexec_fn=setup)
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
