"""The Consul test server (``leadership_consul.testing``) against a real container: the kit's
handle tests, and the 3-server cluster behind a client agent."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from leadership_conformance import containers
from leadership_conformance.server_tests import StoreServerTests
from leadership_conformance.servers import Member
from leadership_consul.testing import ConsulServer

pytestmark = pytest.mark.skipif(not containers.docker_available(), reason="no Docker daemon reachable")


def _http_json(url: str, method: str = "GET", body: bytes | None = None) -> Any:
    request = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


class TestConsulServer(StoreServerTests):
    scheme = "consul"

    def put(self, member: Member, key: str, value: str) -> None:
        assert _http_json(f"http://{member.address}/v1/kv/{key}", "PUT", value.encode()) is True

    def get(self, member: Member, key: str) -> str | None:
        try:
            reply = _http_json(f"http://{member.address}/v1/kv/{key}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return base64.b64decode(reply[0]["Value"]).decode()


def test_a_cluster_needs_three_servers() -> None:
    with pytest.raises(ValueError, match="at least 3 servers"):
        ConsulServer.start(members=2)


@pytest.mark.cluster
def test_cluster_of_three_servers_behind_a_client_agent_survives_losing_its_leader() -> None:
    """The generic cluster test does not fit: a consul:// URL names one agent, not every member."""
    cluster = ConsulServer.start(members=3)
    try:
        assert len(cluster.members) == 4 and cluster.url == f"consul://{cluster.members[3].address}"
        client = cluster.members[3]
        TestConsulServer().put(client, "before", "1")
        leader = cluster.leader_member()
        assert leader in (0, 1, 2), "one of the servers leads, never the client agent"
        cluster.kill_member(leader)
        deadline = time.monotonic() + 30
        while (new := cluster.leader_member()) in (None, leader) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert new not in (None, leader), "the two surviving servers elect a new leader"
        TestConsulServer().put(client, "after", "2")  # the client agent forwards to the new leader
        assert TestConsulServer().get(client, "before") == "1"
        cluster.start_member(leader)
        assert TestConsulServer().get(cluster.members[leader], "after") == "2"
    finally:
        cluster.stop()
