"""The etcd server the backend tests talk to.

``LEADERSHIP_TEST_ETCD_URL`` points at a running server (e.g. ``etcd://127.0.0.1:2379``);
otherwise the conformance kit starts one (``leadership_conformance.servers.server_for``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

URL_ENV = "LEADERSHIP_TEST_ETCD_URL"


@pytest.fixture(scope="session")
def etcd_url() -> Iterator[str]:
    url = os.environ.get(URL_ENV)
    if url:
        yield url
        return
    try:
        from leadership_conformance.servers import server_for
    except ImportError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no etcd server: set {URL_ENV} or install leadership-conformance with servers ({exc})")
    with server_for("etcd") as server:
        yield str(server.url)
