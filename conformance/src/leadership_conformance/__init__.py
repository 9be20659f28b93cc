"""The leadership conformance kit: the shared suite every backend passes, and its helpers.

Use it from your backend's ``tests/test_conformance.py``::

    import pytest
    from leadership_conformance import ConformanceSuite

    class TestMyStoreConformance(ConformanceSuite):
        ttl = 2.0

        @pytest.fixture(scope="class")
        @classmethod
        def leadership_server(cls):
            server = start_my_store()          # anything with .url (+ fault methods)
            yield server
            server.stop()
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
    ProcessFaultTests,
    TokenTests,
    assert_one_leader_at_a_time,
)
from .supervisor import RunCommandTests

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
    "ProcessFaultTests",
    "RunCommandTests",
    "TokenTests",
    "assert_one_leader_at_a_time",
]
