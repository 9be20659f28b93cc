"""A leadership backend on a SQLite file shared by the processes of one host (an example plugin)."""

from .backend import SqliteBackend

__all__ = ["SqliteBackend"]
