"""The leadership conformance kit: the shared suite every backend passes, and its helpers.

Use it from your backend's ``tests/test_conformance.py``::

    import pytest
    from leadership_conformance import ConformanceSuite
    from leadership_conformance.servers import server_for

    class TestMyStoreConformance(ConformanceSuite):
        ttl = 2.0

        @pytest.fixture(scope="class")
        @classmethod
        def leadership_server(cls):
            with server_for("mystore") as server:   # a StoreServer, or anything with .url
                yield server

Your plugin registers its server handle (``leadership_conformance.servers``); the guide is
``docs/writing-a-backend.md`` in the project's repository.
"""

from __future__ import annotations

from .suite import (
    BadInputTests,
    CandidateTests,
    ClusterFailoverTests,
    ConformanceBase,
    ConformanceSuite,
    ExclusionTests,
    FaultTests,
    FollowerTests,
    HerdTests,
    ManyElectionsTests,
    PartitionTests,
    ProcessFaultTests,
    TokenTests,
    assert_one_leader_at_a_time,
)
from .supervisor import RunCommandTests
from .unreachable import UnreachableStoreTests

__all__ = [
    "BadInputTests",
    "CandidateTests",
    "ClusterFailoverTests",
    "ConformanceBase",
    "ConformanceSuite",
    "ExclusionTests",
    "FaultTests",
    "FollowerTests",
    "HerdTests",
    "ManyElectionsTests",
    "PartitionTests",
    "ProcessFaultTests",
    "RunCommandTests",
    "TokenTests",
    "UnreachableStoreTests",
    "assert_one_leader_at_a_time",
]
