"""The original library's two tests, translated."""

from __future__ import annotations

import threading

import leadership


def test_candidate(store: leadership.Store, cluster) -> None:  # type: ignore[no-untyped-def]
    candidate = leadership.Candidate(store, "test_key", "test_node", ttl=0.5)
    stream = candidate.run_for_election()
    assert next(stream) is False  # first value: not elected
    assert next(stream) is True
    assert candidate.is_leader
    # Lose the lock: the store expires our session.
    cluster.expire_all_sessions()
    assert next(stream) is False
    assert next(stream) is True  # campaigning goes on: elected again
    candidate.resign()
    assert next(stream) is False
    assert next(stream) is True
    candidate.stop()
    assert list(stream) == [False]  # stop releases; then the stream ends


def test_follower(store: leadership.Store) -> None:
    follower = leadership.Follower(store, "test_key")
    seen: list[str] = []
    got_three = threading.Event()

    def follow() -> None:
        for leader in follower.follow_election():
            seen.append(leader)
            if len(seen) == 3:
                got_three.set()

    thread = threading.Thread(target=follow)
    thread.start()
    leader1 = leadership.Candidate(store, "test_key", "leader1", ttl=1)
    leader1.wait_elected(5)
    # leader1, leader1 (re-elected: a duplicate, dropped), leader2, leader1
    leader1.resign()
    leader1.wait_elected(5)
    leader2 = leadership.Candidate(store, "test_key", "leader2", ttl=1)
    leader2.run_for_election()
    leader1.stop()
    leader2.wait_elected(5)
    leader1 = leadership.Candidate(store, "test_key", "leader1", ttl=1)
    leader1.run_for_election()
    leader2.stop()
    leader1.wait_elected(5)
    assert got_three.wait(5)
    assert seen == ["leader1", "leader2", "leader1"]
    assert follower.leader == "leader1"
    follower.stop()
    thread.join(5)
    assert not thread.is_alive(), "stop() ends the follower's stream"
    leader1.stop()
