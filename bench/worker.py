"""One contender in its own process, driven by bench/handover.py over stdin/stdout.

    python bench/worker.py KIND URL KEY NAME TTL

KIND is ``ours`` (leadership's sync Candidate), ``kazoo`` (kazoo's ``Election`` recipe),
``etcdctl`` (``etcdctl elect``, etcd's own Go election) or ``consul-lock`` (``consul lock``).

Protocol, one line each. To the worker: ``resign`` (give up leadership; keep campaigning),
``quit`` (and ``dump`` with ``BENCH_TRACE=1``: bench/trace.py's marks). From the worker: ``ready`` once queued for the first time, ``elected <t>`` when it
starts leading, ``resigning <t>`` just before it lets go, ``error <text>``. Times are
``time.monotonic()``, i.e. CLOCK_MONOTONIC, the same clock in every process of the machine.

The peers are used as their documentation shows: the Go tools run as child processes (their
"elected" is the line they print when they win, read here from a pipe), and their release is
what their users do (SIGINT for ``etcdctl elect``, ending the handler for ``consul lock``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

_out_lock = threading.Lock()


def say(*words: object) -> None:
    with _out_lock:
        sys.stdout.write(" ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()


def host_port(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]


Emit = Callable[..., None]


class Ours:
    def __init__(self, url: str, key: str, name: str, ttl: float, emit: Emit = say) -> None:
        import leadership

        self.emit = emit
        self.store = leadership.connect(url)
        self.candidate = leadership.Candidate(self.store, key, name, ttl=ttl)
        stream = self.candidate.run_for_election()
        next(stream)  # False: queued (the first value is reported at once)
        threading.Thread(target=self._follow, args=(stream,), daemon=True).start()
        emit("ready")

    def _follow(self, stream: Any) -> None:
        for elected in stream:
            if elected:
                self.emit("elected", time.monotonic())

    def resign(self) -> None:
        self.emit("resigning", time.monotonic())
        self.candidate.resign()

    def close(self) -> None:
        self.candidate.stop()
        self.store.close()


class Kazoo:
    def __init__(self, url: str, key: str, name: str, ttl: float, emit: Emit = say) -> None:
        from kazoo.client import KazooClient

        self.emit = emit
        self.client = KazooClient(hosts=host_port(url), timeout=ttl)
        self.client.start()
        self.election = self.client.Election(f"/bench-kazoo/{key}", name)
        self.release = threading.Event()
        self.closing = False
        threading.Thread(target=self._run, daemon=True).start()
        emit("ready")

    def _lead(self) -> None:
        self.emit("elected", time.monotonic())
        self.release.wait()
        # kazoo's resign is this function returning, in kazoo's thread: a user's leader function
        # returns where it runs, so the clock starts here, not in the thread that set ``release``
        # (that thread hop is the bench's, not kazoo's). Ours starts at the resign() call, in the
        # thread that makes it, which is how a user resigns.
        self.emit("resigning", time.monotonic())
        self.release.clear()

    def _run(self) -> None:
        while not self.closing:  # the recipe's own loop: lead, release, queue again
            try:
                self.election.run(self._lead)
            except Exception:
                if not self.closing:
                    raise

    def resign(self) -> None:
        self.release.set()  # "resigning" is emitted by _lead, see there

    def close(self) -> None:
        self.closing = True
        self.election.cancel()
        self.release.set()
        self.client.stop()
        self.client.close()


class _Tool:
    """A Go tool that leads while its process lives; a new process queues again."""

    elected_line = b""

    def __init__(self, url: str, key: str, name: str, ttl: float, emit: Emit = say) -> None:
        self.url, self.key, self.name, self.ttl, self.emit = url, key, name, ttl, emit
        self.proc: subprocess.Popen[bytes] | None = None
        self.closing = False
        self._spawn()
        emit("ready")

    def argv(self) -> list[str]:
        raise NotImplementedError

    def _spawn(self) -> None:
        proc = subprocess.Popen(
            self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0
        )
        self.proc = proc
        assert proc.stdout is not None
        threading.Thread(target=self._read, args=(proc, proc.stdout), daemon=True).start()

    def _read(self, proc: subprocess.Popen[bytes], out: IO[bytes]) -> None:
        tail: list[bytes] = []
        for line in iter(out.readline, b""):
            if line.startswith(self.elected_line):
                self.emit("elected", time.monotonic())
            tail = ([*tail, line])[-5:]
        code = proc.wait()
        if self.closing:
            return
        if code not in (0, -signal.SIGINT, 130):
            self.emit("error", f"{self.argv()[0]} exited {code}: {b' | '.join(tail).decode(errors='replace')!r}")
        self._spawn()  # queue again, as a supervisor restarting the tool would

    def release(self, proc: subprocess.Popen[bytes]) -> None:
        raise NotImplementedError

    def resign(self) -> None:
        assert self.proc is not None
        self.emit("resigning", time.monotonic())
        self.release(self.proc)

    def close(self) -> None:
        self.closing = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Etcdctl(_Tool):
    # etcdctl prints the leader key (<election>/<lease hex>) once Campaign has returned.
    def __init__(self, url: str, key: str, name: str, ttl: float, emit: Emit = say) -> None:
        self.elected_line = f"bench-etcdctl/{key}/".encode()
        super().__init__(url, key, name, ttl, emit)

    def argv(self) -> list[str]:
        return [
            os.environ.get("BENCH_ETCDCTL", "etcdctl"),
            f"--endpoints={host_port(self.url)}",
            "elect",
            f"bench-etcdctl/{self.key}",
            self.name,
        ]

    def release(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGINT)  # etcdctl elect resigns on SIGINT, then exits


class ConsulLock(_Tool):
    # With -verbose, consul lock logs "Starting handler" right after the lock is acquired.
    elected_line = b"Starting handler"

    def argv(self) -> list[str]:
        return [
            os.environ.get("BENCH_CONSUL", "consul"),
            "lock",
            f"-http-addr={host_port(self.url)}",
            "-verbose",
            "-pass-stdin",
            f"-name={self.name}",
            f"bench-consul-lock/{self.key}",
            "read line",  # the handler: leads until a line arrives on its stdin
        ]

    def release(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")  # the handler returns; consul lock releases the lock


KINDS: dict[str, Callable[..., Any]] = {
    "ours": Ours,
    "kazoo": Kazoo,
    "etcdctl": Etcdctl,
    "consul-lock": ConsulLock,
}


def main() -> None:
    kind, url, key, name, ttl = sys.argv[1:6]
    traced: Any = None
    if os.environ.get("BENCH_TRACE"):
        # bench/trace.py --processes: timestamp each step of a handover in this process.
        import trace as traced  # bench/trace.py (this folder comes first on sys.path)

        traced.install_process_marks(kind)
    try:
        contender = KINDS[kind](url, key, name, float(ttl))
    except Exception as exc:
        say("error", f"{type(exc).__name__}: {exc}")
        raise
    for line in sys.stdin:
        command = line.strip()
        if command == "resign":
            contender.resign()
        elif command == "dump" and traced is not None:
            marks, traced.marks[:] = list(traced.marks), []
            say("marks", json.dumps(marks))
        elif command == "quit":
            break
    contender.close()


if __name__ == "__main__":
    main()
