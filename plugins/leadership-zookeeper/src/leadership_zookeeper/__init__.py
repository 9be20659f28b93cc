"""ZooKeeper backend for leadership: ``zookeeper://host:2181[,host:2181...][/base][?options]``."""

from __future__ import annotations

from .backend import ZooKeeperBackend, ZooKeeperSession

__all__ = ["ZooKeeperBackend", "ZooKeeperSession"]
