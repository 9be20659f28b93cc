"""etcd v3 backend for leadership: ``leadership.connect("etcd://host:2379,host2:2379")``."""

from __future__ import annotations

from .backend import DEFAULT_PORT, DEFAULT_PREFIX, EtcdBackend, EtcdSession

__all__ = ["DEFAULT_PORT", "DEFAULT_PREFIX", "EtcdBackend", "EtcdSession"]
