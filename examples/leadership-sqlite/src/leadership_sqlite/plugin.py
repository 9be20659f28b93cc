"""Registers the ``sqlite`` backend with leadership (entry point group ``leadership``)."""

from __future__ import annotations

from leadership import hookimpl
from leadership.registry import BackendRegistry

from .backend import SqliteBackend


@hookimpl
def leadership_register_backends(register: BackendRegistry) -> None:
    register.add("sqlite", SqliteBackend, description="a SQLite file shared by the processes of one host (example)")
