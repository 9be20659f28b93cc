from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

import leadership
from leadership.testing import leaked_threads, memory_cluster


@pytest.fixture
def url() -> str:
    """A fresh, isolated memory store."""
    return f"memory://test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(url: str) -> Iterator[leadership.Store]:
    s = leadership.connect(url)
    yield s
    s.close()


@pytest.fixture
def cluster(url: str):  # type: ignore[no-untyped-def]
    return memory_cluster(url.removeprefix("memory://"))


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must leave no leadership thread running (crashed stores excepted: a crash
    leaves its frozen thread behind on purpose, as a killed process would leave nothing)."""
    before = set(threading.enumerate())
    yield
    leaked = leaked_threads(before)
    assert not leaked, f"threads left running: {leaked}"
