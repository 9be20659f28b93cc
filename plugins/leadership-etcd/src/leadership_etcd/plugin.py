"""Registers the ``etcd`` backend with leadership."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from .backend import EtcdBackend

if TYPE_CHECKING:
    from leadership.registry import BackendRegistry

hookimpl = pluggy.HookimplMarker("leadership")


@hookimpl
def leadership_register_backends(register: BackendRegistry) -> None:
    register.add(
        "etcd",
        EtcdBackend,
        description="etcd v3 (leases, create-revision FIFO queue; aetcd over gRPC)",
    )
