"""The ``memory`` store as a server handle (no container, no process): registered as ``memory``."""

from __future__ import annotations

import uuid

from leadership.testing import memory_cluster

from .servers import StoreServer

__all__ = ["MemoryServer"]


class MemoryServer(StoreServer):
    """A fresh named memory store with the fault injection the kit uses: pause makes it
    unavailable, restart keeps its data, every backend call counts as a request."""

    scheme = "memory"
    can_inject_faults = True

    def __init__(self) -> None:
        self.name = f"conformance-{uuid.uuid4().hex[:8]}"
        super().__init__([], url=f"memory://{self.name}")
        self.cluster = memory_cluster(self.name)

    @classmethod
    def start(cls, members: int = 1) -> MemoryServer:
        if members != 1:
            raise ValueError("the memory store has no members to run as a cluster; members must be 1")
        return cls()

    @classmethod
    def external(cls, url: str) -> MemoryServer:
        raise ValueError("the memory store lives in the test process: there is no external one to use")

    def pause(self) -> None:
        self.cluster.set_available(False)

    def unpause(self) -> None:
        self.cluster.set_available(True)

    def restart(self) -> None:
        self.cluster.restart()

    def request_count(self) -> int | None:
        return self.cluster.requests

    def stop(self) -> None:
        self.cluster.expire_all_sessions()
