"""The kit's own tests: the generic server handles and the memory store's conformance run."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from leadership.testing import leaked_threads


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must leave no leadership thread running (crashed stores excepted: a crash
    leaves its frozen thread behind on purpose, as a killed process would leave nothing)."""
    before = set(threading.enumerate())
    yield
    leaked = leaked_threads(before)
    assert not leaked, f"threads left running: {leaked}"
