"""Consul backend for leadership: ``leadership.connect("consul://127.0.0.1:8500")``."""

from __future__ import annotations

from .backend import ConsulBackend, ConsulSession

__all__ = ["ConsulBackend", "ConsulSession"]
