"""The shared conformance suite against Consul, exactly as a third-party backend runs it.

The agent comes from ``server_for("consul")``: ``LEADERSHIP_TEST_CONSUL_URL`` if set (then the
fault tests are skipped: an external agent cannot be paused or restarted), else a container.
Consul's smallest ttl is 20 s (session TTL 10 s), so the timing tests here take minutes.
"""

from __future__ import annotations

import http.client
import time
import uuid
from collections.abc import Iterator

import pytest

import leadership
from leadership_conformance import ClusterFailoverTests, ConformanceSuite
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

    @pytest.mark.store_faults
    def test_leaders_are_not_demoted_by_a_short_restart(self, leadership_server: StoreServer) -> None:
        """A Consul server just restarted answers default-mode reads from a state store still
        replaying its raft log, where a held key can read as missing. A leader's watch, set up
        again after the restart, must not take that for the loss of its key."""
        if not leadership_server.can_inject_faults:
            pytest.skip("an external agent cannot be restarted")
        demoted: list[tuple[str, str]] = []

        class Recorder:
            @leadership.hookimpl
            def leadership_demoted(self, key: str, name: str, token: int, reason: str, store: str) -> None:
                demoted.append((key, reason))

        plugin_manager = leadership.get_plugin_manager()
        plugin_manager.register(Recorder())
        prefix = f"conformance/restart-{uuid.uuid4().hex[:8]}"
        with leadership.connect(leadership_server.url, plugin_manager=plugin_manager) as store:
            # Ten leaders: ten watches set up again after each restart, ten chances to misread.
            candidates = [leadership.Candidate(store, f"{prefix}/{i}", "me", ttl=self.ttl) for i in range(10)]
            for candidate in candidates:
                candidate.wait_elected(30)
            for _ in range(2):
                _lengthen_raft_log(leadership_server.url, f"{prefix}/filler", 500)  # a longer replay
                leadership_server.restart()
                # Time for the health check to see the store back and set every watch up again.
                time.sleep(3 * store.aio.health_interval + 1)
            assert not demoted, f"leaders demoted by restarts far shorter than their ttl: {demoted}"
            assert all(c.is_leader for c in candidates)


class TestClusterFailoverConsul(ClusterFailoverTests):
    """Three Consul servers behind the client agent the candidates talk to; the servers' raft
    leader is killed in the middle of a handover. The client agent forwards to whichever server
    leads; sessions are checked against the agent's node, which stays up."""

    ttl = 20.0
    store_slack = 1.0

    @pytest.fixture(scope="class")
    @classmethod
    def leadership_server(cls) -> Iterator[StoreServer]:
        with server_for("consul", members=3) as server:
            yield server


def _lengthen_raft_log(url: str, key: str, writes: int) -> None:
    """Append ``writes`` raft entries (KV writes), which a restarted server replays."""
    address = url.removeprefix("consul://").split("/")[0].split("?")[0]
    connection = http.client.HTTPConnection(address, timeout=10)
    try:
        for i in range(writes):
            connection.request("PUT", f"/v1/kv/{key}", body=str(i).encode())
            response = connection.getresponse()
            response.read()
            assert response.status == 200, f"consul refused a write: HTTP {response.status}"
    finally:
        connection.close()
