"""The Consul test server (``leadership_consul.testing``) against a real container: the kit's
handle tests (one server agent; the kit runs no Consul cluster)."""

from __future__ import annotations

import base64
import json
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


def test_a_cluster_is_refused() -> None:
    with pytest.raises(ValueError, match="members must be 1"):
        ConsulServer.start(members=3)
