"""The ``leadership_session_refreshed`` observer hook: one call per confirmed keepalive."""

from __future__ import annotations

import time
import uuid

import leadership
from leadership.testing import memory_cluster


class Refreshes:
    def __init__(self) -> None:
        self.calls: list[tuple[float, float, str]] = []

    @leadership.hookimpl
    def leadership_session_refreshed(self, ttl: float, duration: float, store: str) -> None:
        self.calls.append((ttl, duration, store))


def test_each_confirmed_refresh_is_reported_with_its_round_trip() -> None:
    name = f"refresh-{uuid.uuid4().hex[:8]}"
    pm = leadership.get_plugin_manager(load_entrypoints=False)
    rec = Refreshes()
    pm.register(rec)
    with leadership.connect(f"memory://{name}", plugin_manager=pm) as store:
        candidate = leadership.Candidate(store, "k", "a", ttl=0.3)
        candidate.wait_elected(5)
        time.sleep(0.5)  # refreshes every ttl/3 = 0.1 s
        count = len(rec.calls)
        assert count >= 3, rec.calls
        assert all(ttl == 0.3 and 0 <= duration < 0.3 and url == f"memory://{name}" for ttl, duration, url in rec.calls)
        # A refresh that fails is not reported here (it goes to leadership_store_error).
        memory_cluster(name).set_available(False)
        time.sleep(0.05)
        failing = len(rec.calls)
        time.sleep(0.25)
        assert len(rec.calls) == failing
        memory_cluster(name).set_available(True)
        candidate.stop()
