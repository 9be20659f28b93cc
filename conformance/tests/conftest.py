"""Markers of the kit's own tests: select a store with ``-m etcd`` (or ``zookeeper``, ``consul``)."""

from __future__ import annotations

from typing import Any


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "etcd: needs an etcd server (container or LEADERSHIP_TEST_ETCD_URL)")
    config.addinivalue_line(
        "markers", "zookeeper: needs a ZooKeeper server (container or LEADERSHIP_TEST_ZOOKEEPER_URL)"
    )
    config.addinivalue_line("markers", "consul: needs a Consul server (container or LEADERSHIP_TEST_CONSUL_URL)")
