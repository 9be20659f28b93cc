"""The asyncio API: the same shape as the sync one, bound to the running event loop.

::

    async with await leadership.aio.connect("etcd://127.0.0.1:2379") as store:
        candidate = leadership.aio.Candidate(store, "service/swarm/leader", "underwood", ttl=15.0)
        async for elected in candidate.run_for_election():
            ...
"""

from __future__ import annotations

from .candidate import AsyncCandidate as Candidate
from .candidate import AsyncLeadership as Leadership
from .candidate import ahold as hold
from .follower import AsyncFollower as Follower
from .store import AsyncStore as Store
from .store import aconnect as connect

__all__ = ["Candidate", "Follower", "Leadership", "Store", "connect", "hold"]
