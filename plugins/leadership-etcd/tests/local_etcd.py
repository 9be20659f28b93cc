"""etcd members run as local processes from the ``etcd`` binary, for fault tests that need to
kill, freeze and restart members (one member or a three-member cluster) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from leadership.errors import StoreUnavailableError

ETCD = shutil.which("etcd")
#: Optional port range "FIRST-LAST" (or just FIRST: 8 ports) to use instead of free ports
#: picked by the OS; clusters take consecutive ports from it, wrapping around.
BASE_PORT_ENV = "LEADERSHIP_TEST_ETCD_BASE_PORT"
_next_port: list[int] = []


def _ports(count: int) -> list[int]:
    spec = os.environ.get(BASE_PORT_ENV)
    if not spec:
        return [_free_port() for _ in range(count)]
    first_s, _, last_s = spec.partition("-")
    first = int(first_s)
    last = int(last_s) if last_s else first + 7
    if not _next_port or _next_port[0] + count - 1 > last:
        _next_port[:] = [first]
    start = _next_port[0]
    _next_port[0] += count
    return list(range(start, start + count))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Member:
    def __init__(
        self, name: str, client_port: int, peer_port: int, data_dir: Path, extra: list[str], scheme: str
    ) -> None:
        self.extra = extra
        self.scheme = scheme
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.with_suffix(".log")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self, initial_cluster: str, state: str = "new") -> None:
        assert ETCD is not None
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    ETCD,
                    "--name",
                    self.name,
                    "--data-dir",
                    str(self.data_dir),
                    "--listen-client-urls",
                    f"{self.scheme}://{self.endpoint}",
                    "--advertise-client-urls",
                    f"{self.scheme}://{self.endpoint}",
                    "--listen-peer-urls",
                    self.peer_url,
                    "--initial-advertise-peer-urls",
                    self.peer_url,
                    "--initial-cluster",
                    initial_cluster,
                    "--initial-cluster-state",
                    state,
                    "--initial-cluster-token",
                    "leadership-test",
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class LocalCluster:
    """``size`` members; ``url`` lists every member's client endpoint. ``extra`` are more etcd
    flags (TLS files: pass ``tls=True`` too, so the members serve https)."""

    def __init__(self, size: int = 1, extra: list[str] | None = None, tls: bool = False) -> None:
        self.tls = tls
        self._tmp = tempfile.mkdtemp(prefix="leadership-etcd-")
        ports = _ports(2 * size)
        self.members = [
            Member(
                f"m{i}",
                ports[2 * i],
                ports[2 * i + 1],
                Path(self._tmp) / f"m{i}",
                extra or [],
                "https" if tls else "http",
            )
            for i in range(size)
        ]
        self.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        try:
            for m in self.members:
                m.start(self.initial_cluster)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(m.endpoint for m in self.members)

    def restart(self, pause: float = 0.5) -> None:
        """Kill every member and start it again with its data."""
        for m in self.members:
            m.kill()
        time.sleep(pause)
        for m in self.members:
            m.start(self.initial_cluster, state="existing")

    def freeze(self) -> None:
        for m in self.members:
            m.freeze()

    def thaw(self) -> None:
        for m in self.members:
            m.thaw()

    def kill_leader(self) -> str:
        """SIGKILL the raft leader; returns its client endpoint."""
        leader = self.leader()
        leader.kill()
        return leader.endpoint

    def leader_endpoint(self) -> str:
        return self.leader().endpoint

    def leader(self) -> Member:
        """The member that is the raft leader now (asked with etcdctl-free HTTP /v3 calls)."""
        import json
        import urllib.request

        for m in self.members:
            if m.process is None:
                continue
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(f"http://{m.endpoint}/v3/maintenance/status", data=b"{}"), timeout=2
                ) as r:
                    status = json.load(r)
            except OSError:
                continue
            if status.get("leader") == status.get("header", {}).get("member_id"):
                return m
        raise RuntimeError("no raft leader")

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        if self.tls:  # no plain HTTP status endpoint: wait until every member accepts connections
            for m in self.members:
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", m.client_port), timeout=1).close()
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
            time.sleep(1.0)
            return
        while True:
            try:
                self.leader()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        for m in self.members:
            if m.process is not None and m.process.poll() is None:
                m.thaw()
            m.kill()
        shutil.rmtree(self._tmp, ignore_errors=True)


T = TypeVar("T")


async def retrying(op: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """What the core does on StoreUnavailableError (without the jitter)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await op()
        except StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
