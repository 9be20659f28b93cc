"""The kit's pytest plugin (entry point ``pytest11``). Inert at import: it only registers the
markers the suite uses; the suite itself is imported by the backend's own test module."""

from __future__ import annotations

from typing import Any


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "store_faults: needs a store the kit can pause and restart")
    config.addinivalue_line("markers", "cluster: needs a multi-member store cluster")
