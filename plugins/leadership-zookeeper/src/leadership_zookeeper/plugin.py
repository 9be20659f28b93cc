"""Registers the ``zookeeper`` backend with leadership (entry point group ``leadership``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from leadership.registry import BackendRegistry

__all__ = ["leadership_register_backends"]

# The same marker as leadership.hookimpl, without importing the core's package root.
hookimpl = pluggy.HookimplMarker("leadership")


@hookimpl
def leadership_register_backends(register: BackendRegistry) -> None:
    from .backend import ZooKeeperBackend

    register.add(
        "zookeeper",
        ZooKeeperBackend,
        description="Apache ZooKeeper via kazoo: ephemeral sequential nodes, session timeout = ttl, czxid tokens",
    )
