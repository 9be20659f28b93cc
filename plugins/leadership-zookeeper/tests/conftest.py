"""A ZooKeeper for the plugin's tests: ``LEADERSHIP_TEST_ZOOKEEPER_URL`` or a container from the kit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from leadership_conformance.servers import server_for


@pytest.fixture(scope="session")
def zk_server() -> Iterator[Any]:
    server = server_for("zookeeper")
    yield server
    server.stop()


@pytest.fixture
def zk_url(zk_server: Any) -> str:
    """The server's URL with a base path of its own, so tests never see each other's keys."""
    url = str(zk_server.url)
    head, sep, query = url.partition("?")
    scheme, _, rest = head.partition("://")
    hosts = rest.split("/", 1)[0]
    return f"{scheme}://{hosts}/leadership-tests/{uuid.uuid4().hex[:12]}" + (sep + query if sep else "")
