"""Helpers for testing your own leader logic on the ``memory`` store, without a server.

::

    from leadership.testing import memory_cluster, crash

    store = leadership.connect("memory://my-test")
    ...
    memory_cluster("my-test").expire_all_sessions()      # as if keepalives had stopped
    memory_cluster("my-test").set_available(False)        # the store is unreachable
    crash(store)                                          # the process died: nothing released
"""

from __future__ import annotations

from .backends.memory import MemoryCluster, cluster
from .store import Store

__all__ = ["MemoryCluster", "crash", "memory_cluster"]


def memory_cluster(name: str = "default") -> MemoryCluster:
    """The memory store ``memory://NAME`` (``memory://`` is ``default``)."""
    return cluster(name)


def crash(store: Store) -> None:
    """Stop the store's engine without releasing anything, as a killed process would: its
    sessions stop being refreshed and expire after their ttl; nothing is withdrawn.

    The core's loop is frozen, and the backend's own background work that would keep sessions
    alive (ZooKeeper's client thread pings by itself) is stopped through
    :meth:`leadership.Backend.abandon`. The store object is unusable afterwards."""
    store._abandon()
    store.aio.backend.abandon()
