"""Helpers for testing your own leader logic, and the fault injection the conformance kit uses.

On the ``memory`` store, without a server::

    from leadership.testing import memory_cluster, crash, freeze, thaw

    store = leadership.connect("memory://my-test")
    ...
    memory_cluster("my-test").expire_all_sessions()      # as if keepalives had stopped
    memory_cluster("my-test").set_available(False)        # the store is unreachable
    crash(store)                                          # the process died: nothing released

On any store (a :class:`leadership.Store` from ``connect``):

- :func:`freeze` / :func:`thaw`: the process is stopped (SIGSTOP) and resumed: nothing of the
  store's elections runs meanwhile, no refresh, no timer; ``is_leader`` still reads the deadline.
- :func:`crash`: the process died: nothing is released, sessions expire after their ttl.
- :func:`dump_tasks`: the stacks of the store's tasks, for a failure message.
- :func:`dispose`: end a store whatever was done to it (thaw a frozen one, revive a crashed one
  just to close it), so a test leaves no thread or session behind.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Collection

from .backends.memory import MemoryCluster, cluster
from .store import Store

__all__ = [
    "MemoryCluster",
    "crash",
    "dispose",
    "dump_tasks",
    "freeze",
    "is_frozen",
    "leaked_threads",
    "memory_cluster",
    "thaw",
]

# Per store: the event its frozen loop waits on. A frozen loop runs nothing until it is set.
_frozen: dict[int, threading.Event] = {}
_lock = threading.Lock()


def memory_cluster(name: str = "default") -> MemoryCluster:
    """The memory store ``memory://NAME`` (``memory://`` is ``default``)."""
    return cluster(name)


def is_frozen(store: Store) -> bool:
    """Whether ``store`` is frozen (or crashed)."""
    with _lock:
        return id(store) in _frozen


def freeze(store: Store) -> None:
    """Block the store's event loop, as if the process were stopped: nothing runs until
    :func:`thaw`. Blocking calls on the store (``stop()``, ``resign()``...) wait meanwhile."""
    with _lock:
        if id(store) in _frozen:
            return
        thawed = _frozen[id(store)] = threading.Event()
    store._runner.loop.call_soon_threadsafe(thawed.wait)


def thaw(store: Store) -> None:
    """Resume a store after :func:`freeze`: overdue timers fire, refreshes resume, leaders whose
    deadline passed meanwhile report False."""
    with _lock:
        thawed = _frozen.pop(id(store), None)
    if thawed is not None:
        thawed.set()


def crash(store: Store) -> None:
    """Stop the store's engine without releasing anything, as a killed process would: its
    sessions stop being refreshed and expire after their ttl; nothing is withdrawn. The store
    counts as closed; streams blocked on it end. Its frozen thread is left behind (a daemon).

    Besides the core's loop, the backend's own background work that would keep sessions alive
    (ZooKeeper's client thread pings by itself) is stopped, through
    :meth:`leadership.Backend.abandon`."""
    store._closed = True
    store._runner.abandoned = True
    store._runner.thread._leadership_abandoned = True  # type: ignore[attr-defined]
    freeze(store)
    store.aio.backend.abandon()


def dispose(store: Store) -> None:
    """Close ``store`` whatever was done to it: a frozen or crashed store is resumed first (a
    crashed one only to revoke what it left and end its thread). Errors are not raised."""
    if store._runner.abandoned and is_frozen(store):
        store._runner.abandoned = False
        store._closed = False
    thaw(store)
    try:
        store.close()
    except Exception:  # noqa: BLE001 - best effort, for teardown
        pass


def leaked_threads(before: Collection[threading.Thread], timeout: float = 2.0) -> list[threading.Thread]:
    """The leadership threads started since ``before`` (a ``threading.enumerate()`` taken earlier)
    that still run after waiting up to ``timeout`` for them: what a test left behind. A crashed
    store's frozen thread is not counted: a crash leaves it on purpose, as a killed process would."""
    started = [
        t
        for t in threading.enumerate()
        if t not in before
        and t.name.startswith("leadership-")
        and t.is_alive()
        and not getattr(t, "_leadership_abandoned", False)
    ]
    for t in started:
        t.join(timeout=timeout)
    return [t for t in started if t.is_alive()]


def dump_tasks(store: Store, timeout: float = 2.0) -> str:
    """The stacks of the tasks running on the store's event loop, for a failing test's message."""

    async def dump() -> str:
        out = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(limit=8, file=out)
        return out.getvalue()

    return store._runner.run(dump(), timeout=timeout)
