"""The shared conformance suite against Consul, exactly as a third-party backend runs it.

The agent comes from ``server_for("consul")``: ``LEADERSHIP_TEST_CONSUL_URL`` if set (then the
fault tests are skipped: an external agent cannot be paused or restarted), else a container.
Consul's smallest ttl is 20 s (session TTL 10 s), so the timing tests here take minutes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from leadership_conformance import ConformanceSuite
from leadership_conformance.servers import StoreServer, server_for


class TestConformanceConsul(ConformanceSuite):
    #: The smallest ttl Consul honours: session TTL = ttl/2 and Consul refuses TTLs below 10 s.
    ttl = 20.0
    #: Consul invalidates a session exactly 2 x TTL (= ttl) after its last renewal, through one
    #: raft write; the slack covers that write and the successor's wake-up.
    store_slack = 1.0

    @pytest.fixture(scope="class")
    @classmethod
    def leadership_server(cls) -> Iterator[StoreServer]:
        server = server_for("consul")
        yield server
        server.stop()
