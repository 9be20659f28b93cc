"""Registers the ``consul`` backend with leadership (entry point group ``leadership``)."""

from __future__ import annotations

import pluggy

from leadership.registry import BackendRegistry

from .backend import ConsulBackend

__all__ = ["leadership_register_backends"]

# The same marker as ``leadership.hookimpl``.
hookimpl = pluggy.HookimplMarker("leadership")


@hookimpl
def leadership_register_backends(register: BackendRegistry) -> None:
    register.add("consul", ConsulBackend, description="Consul sessions and KV locks (py-consul)")
