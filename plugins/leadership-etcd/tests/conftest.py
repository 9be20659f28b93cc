"""The etcd server the backend tests talk to.

``LEADERSHIP_TEST_ETCD_URL`` points at a running server (e.g. ``etcd://127.0.0.1:2379``);
otherwise the kit's ``server_for`` starts one from ``leadership_etcd.testing``.
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
        pytest.skip(f"no etcd server: set {URL_ENV} or install leadership-etcd[testing] ({exc})")
    with server_for("etcd") as server:
        yield str(server.url)
