"""ZooKeeper requests counted by type on the wire, for the bench's requests-per-handover figure.

The server's own counter (``zk_packets_received`` from ``mntr``) counts every client's pings
too: with 51 clients a 0.6 s window holds a few of them at random, which is as large as the
figure being measured. Here a proxy between the clients and the server reads the client's side
of each connection, which is a sequence of frames (a 4-byte big-endian length, then the
payload): the first frame is the session handshake, every later one starts with the request
header ``xid`` (int32), ``type`` (int32). Pings are ``xid -2``, type 11; they are counted apart
and left out of the figure, and so are the requests this project sends only to keep its
sessions confirmed (``exists /``, the core's session refresh and health check: keepalives).

The proxy is the conformance kit's :class:`~leadership_conformance.proxy.FaultProxy` (bench use
only), with the client's stream read through a tap that parses the frames as they pass.
"""

from __future__ import annotations

import collections
import struct
import threading
from typing import Any

from leadership_conformance.proxy import FaultProxy

__all__ = ["KEEPALIVES", "CountingProxy", "OPCODES"]

OPCODES = {
    1: "create", 2: "delete", 3: "exists", 4: "getData", 5: "setData", 6: "getACL", 7: "setACL",
    8: "getChildren", 9: "sync", 11: "ping", 12: "getChildren2", 13: "check", 14: "multi",
    15: "create2", 16: "reconfig", 17: "checkWatches", 18: "removeWatches", 19: "createContainer",
    20: "deleteContainer", 21: "createTTL", 22: "multiRead", 100: "auth", 101: "setWatches",
    102: "sasl", 103: "getEphemerals", 104: "getAllChildrenNumber", 105: "setWatches2",
    106: "addWatch", 107: "whoAmI", -11: "closeSession",
}
#: Not requests of an election: ZooKeeper's own pings, and the confirmation round trips of this
#: project's sessions (``exists /``), both sent on a timer whatever the elections do.
KEEPALIVES = ("ping", "exists /")

_HEADER = struct.Struct(">ii")
_LENGTH = struct.Struct(">i")


class _Frames:
    """Splits one connection's client-to-server bytes into frames and counts them by type."""

    def __init__(self, counts: collections.Counter[str], lock: threading.Lock) -> None:
        self.counts = counts
        self.lock = lock
        self.buffer = bytearray()
        self.handshake = True

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4:
            (length,) = _LENGTH.unpack_from(self.buffer)
            if len(self.buffer) < 4 + length:
                return
            frame = bytes(self.buffer[4 : 4 + length])
            del self.buffer[: 4 + length]
            kind = self.classify(frame)
            with self.lock:
                self.counts[kind] += 1

    def classify(self, frame: bytes) -> str:
        if self.handshake:
            self.handshake = False
            return "connect"
        if len(frame) < 8:
            return "?"
        op = _HEADER.unpack_from(frame)[1]  # (xid, type)
        name = OPCODES.get(op, f"op{op}")
        if name == "exists" and len(frame) >= 12:
            # Exists: path (int32 length + UTF-8), watch flag.
            (n,) = _LENGTH.unpack_from(frame, 8)
            if frame[12 : 12 + n] == b"/":
                return "exists /"
        return name


class _Tap:
    """The client's stream reader, as the proxy's pump sees it: every chunk read is parsed."""

    def __init__(self, reader: Any, frames: _Frames) -> None:
        self._reader = reader
        self._frames = frames

    async def read(self, n: int = -1) -> bytes:
        data: bytes = await self._reader.read(n)
        if data:
            self._frames.feed(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


class CountingProxy(FaultProxy):
    """A proxy to one ZooKeeper server that counts the requests of every client through it."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        super().__init__(upstream_host, upstream_port)

    async def _accept(self, reader: Any, writer: Any) -> None:
        await super()._accept(_Tap(reader, _Frames(self.counts, self._lock)), writer)

    def snapshot(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self.counts)

    def url_for(self, url: str) -> str:
        """``url`` with the server's address replaced by the proxy's."""
        target = f"{self.upstream_host}:{self.upstream_port}"
        if target not in url:
            raise ValueError(f"{url!r} does not name {target}")
        return url.replace(target, self.address)
