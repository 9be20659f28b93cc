"""The etcd test server (``leadership_etcd.testing``) against real containers: the kit's
handle tests, a port taken meanwhile, and the containers removed by ``stop()``."""

from __future__ import annotations

import base64
import json
import socket
import urllib.request
from typing import Any

import pytest
from testcontainers.core.docker_client import DockerClient

from leadership_conformance import containers
from leadership_conformance.server_tests import StoreServerTests
from leadership_conformance.servers import Member
from leadership_etcd import testing

pytestmark = pytest.mark.skipif(not containers.docker_available(), reason="no Docker daemon reachable")


def _http_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"null")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def etcd_put(member: Member, key: str, value: str) -> None:
    _http_json(f"http://{member.address}/v3/kv/put", {"key": _b64(key), "value": _b64(value)})


class TestEtcdServer(StoreServerTests):
    scheme = "etcd"
    cluster_members = 3

    def put(self, member: Member, key: str, value: str) -> None:
        etcd_put(member, key, value)

    def get(self, member: Member, key: str) -> str | None:
        kvs = _http_json(f"http://{member.address}/v3/kv/range", {"key": _b64(key)}).get("kvs") or []
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def _container_exists(name: str) -> bool:
    client = DockerClient()
    try:
        return bool(client.client.containers.list(all=True, filters={"name": name}))
    finally:
        client.client.close()


def test_stop_removes_the_containers() -> None:
    s = testing.start_etcd()
    name = s.members[0].handle.get_wrapped_container().name
    assert _container_exists(name)
    s.stop()
    assert not _container_exists(name)


def test_a_port_taken_meanwhile_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    if not containers.host_network():
        pytest.skip("with bridge networking Docker publishes the port itself")
    pick = containers.free_ports
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        calls: list[int] = []

        def first_pick_taken(count: int) -> list[int]:
            calls.append(count)
            ports = pick(count)
            return [taken, *ports[1:]] if len(calls) == 1 else ports

        monkeypatch.setattr(testing, "free_ports", first_pick_taken)
        with testing.start_etcd() as s:
            assert len(calls) == 2
            assert s.members[0].port != taken
            etcd_put(s.members[0], "k", "v")


def test_rejects_an_unknown_network_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADERSHIP_TEST_NETWORK", "overlay")
    with pytest.raises(ValueError, match="LEADERSHIP_TEST_NETWORK"):
        testing.start_etcd()
