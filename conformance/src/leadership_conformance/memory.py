"""The ``memory`` store wrapped as a conformance server handle (no container)."""

from __future__ import annotations

import uuid

from leadership.testing import memory_cluster


class MemoryServer:
    """A fresh named memory store with the fault injection the kit uses."""

    can_inject_faults = True

    def __init__(self) -> None:
        self.name = f"conformance-{uuid.uuid4().hex[:8]}"
        self.url = f"memory://{self.name}"
        self.cluster = memory_cluster(self.name)

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
