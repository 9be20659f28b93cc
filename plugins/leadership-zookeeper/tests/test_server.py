"""The ZooKeeper test server (``leadership_zookeeper.testing``) against real containers: the
kit's handle tests, for one server and a three-server ensemble."""

from __future__ import annotations

import socket
import struct

import pytest

from leadership_conformance import containers
from leadership_conformance.server_tests import StoreServerTests
from leadership_conformance.servers import Member

pytestmark = pytest.mark.skipif(not containers.docker_available(), reason="no Docker daemon reachable")




class _ZooKeeper:
    """Just enough of the ZooKeeper wire protocol (jute) for create and getData."""

    def __init__(self, member: Member, timeout_ms: int = 4000) -> None:
        self._sock = socket.create_connection((member.host, member.port), timeout=5)
        self._xid = 0
        connect = struct.pack(">iqiq", 0, 0, timeout_ms, 0) + self._buffer(bytes(16)) + b"\x00"
        self._send(connect)
        self._recv()  # ConnectResponse

    @staticmethod
    def _buffer(data: bytes) -> bytes:
        return struct.pack(">i", len(data)) + data

    def _send(self, payload: bytes) -> None:
        self._sock.sendall(struct.pack(">i", len(payload)) + payload)

    def _recv(self) -> bytes:
        (length,) = struct.unpack(">i", self._exactly(4))
        return self._exactly(length)

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("ZooKeeper closed the connection")
            data += chunk
        return data

    def _call(self, op: int, body: bytes) -> tuple[int, bytes]:
        self._xid += 1
        self._send(struct.pack(">ii", self._xid, op) + body)
        reply = self._recv()
        _xid, _zxid, err = struct.unpack(">iqi", reply[:16])
        return err, reply[16:]

    def create(self, path: str, data: bytes) -> None:
        world_anyone = struct.pack(">i", 31) + self._buffer(b"world") + self._buffer(b"anyone")
        body = self._buffer(path.encode()) + self._buffer(data) + struct.pack(">i", 1) + world_anyone
        err, _ = self._call(1, body + struct.pack(">i", 0))
        assert err == 0, f"create {path}: error {err}"

    def get(self, path: str) -> bytes | None:
        err, reply = self._call(4, self._buffer(path.encode()) + b"\x00")
        if err == -101:  # NoNode
            return None
        assert err == 0, f"getData {path}: error {err}"
        (length,) = struct.unpack(">i", reply[:4])
        return reply[4 : 4 + length]

    def close(self) -> None:
        self._call(-11, b"")
        self._sock.close()


class TestZooKeeperServer(StoreServerTests):
    scheme = "zookeeper"
    cluster_members = 3

    def put(self, member: Member, key: str, value: str) -> None:
        zk = _ZooKeeper(member)
        try:
            zk.create("/" + key, value.encode())
        finally:
            zk.close()

    def get(self, member: Member, key: str) -> str | None:
        zk = _ZooKeeper(member)
        try:
            data = zk.get("/" + key)
        finally:
            zk.close()
        return None if data is None else data.decode()
