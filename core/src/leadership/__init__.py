"""leadership: distributed leader election on Consul, etcd and ZooKeeper (and an in-process
``memory`` store), with fencing tokens and self-demotion.

Sync API (primary)::

    store = leadership.connect("etcd://127.0.0.1:2379")
    candidate = leadership.Candidate(store, "service/swarm/leader", "underwood", ttl=15.0)
    for elected in candidate.run_for_election():
        ...

The asyncio API lives in :mod:`leadership.aio` with the same shape.
"""

from __future__ import annotations

from .backend import Backend, Session, Term
from .candidate import Candidate, Leadership, hold
from .errors import (
    AuthenticationError,
    BackendRegistrationError,
    ClosedError,
    ConfigurationError,
    ElectionTimeoutError,
    InvalidArgumentError,
    InvalidTTLError,
    LeadershipError,
    NotLeaderError,
    PermanentStoreError,
    SessionLostError,
    StoreError,
    StoreUnavailableError,
    UnknownBackendError,
    UsageError,
)
from .follower import Follower
from .plugins import get_plugin_manager, hookimpl
from .registry import BackendRegistry
from .retry import RetryPolicy
from .store import Store, connect
from .url import StoreURL

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "Backend",
    "BackendRegistrationError",
    "BackendRegistry",
    "Candidate",
    "ClosedError",
    "ConfigurationError",
    "ElectionTimeoutError",
    "Follower",
    "InvalidArgumentError",
    "InvalidTTLError",
    "Leadership",
    "LeadershipError",
    "NotLeaderError",
    "PermanentStoreError",
    "RetryPolicy",
    "Session",
    "SessionLostError",
    "Store",
    "StoreError",
    "StoreURL",
    "StoreUnavailableError",
    "Term",
    "UnknownBackendError",
    "UsageError",
    "connect",
    "get_plugin_manager",
    "hold",
    "hookimpl",
]
