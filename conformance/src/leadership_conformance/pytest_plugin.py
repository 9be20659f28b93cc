"""The kit's pytest plugin (entry point ``pytest11``). Inert at import: it registers the markers
the suite uses and lets ``-k`` select a standard test by the mixin that defines it
(``-k TokenTests``); the suite itself is imported by the backend's own test module."""

from __future__ import annotations

from typing import Any

_SUITE_MODULE = "leadership_conformance.suite"


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "store_faults: needs a store the kit can pause and restart")
    config.addinivalue_line("markers", "processes: kills or freezes candidate processes")
    config.addinivalue_line("markers", "cluster: needs a multi-member store cluster")


def pytest_collection_modifyitems(items: list[Any]) -> None:
    for item in items:
        cls = getattr(item, "cls", None)
        name = getattr(item, "originalname", None)
        if cls is None or name is None:
            continue
        for base in cls.__mro__:
            if name in vars(base):
                if base.__module__ == _SUITE_MODULE:
                    item.extra_keyword_matches.add(base.__name__)
                break
