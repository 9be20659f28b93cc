"""The memory backend runs the shared conformance suite exactly as a third-party backend would."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from leadership_conformance import ConformanceSuite
from leadership_conformance.memory import MemoryServer


class TestMemoryConformance(ConformanceSuite):
    ttl = 0.6
    store_slack = 0.25
    supports_processes = False  # in-process store: agents run in threads with their own loops
    handover_timeout = 3.0
    recovery_time = 2.0
    herd_ttl = 30.0

    @pytest.fixture(scope="class")
    @classmethod
    def leadership_server(cls) -> Iterator[MemoryServer]:
        server = MemoryServer()
        yield server
        server.stop()

    @pytest.fixture
    def unreachable_url(self) -> Iterator[str]:
        """A memory store never reachable (memory URLs name a store, not an address)."""
        server = MemoryServer()
        server.pause()
        yield server.url
        server.stop()
