"""The kit's own tests: the generic server handles and the memory store's conformance run."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must leave no leadership thread running (crashed stores excepted: a crash
    leaves its frozen thread behind on purpose, as a killed process would leave nothing)."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before
        and t.name.startswith("leadership-")
        and t.is_alive()
        and not getattr(t, "_leadership_abandoned", False)
    ]
    for t in leaked:
        t.join(timeout=2)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"
