"""The campaign's history checker on synthetic histories: each violation kind is caught, and
the legitimate shapes (a killed or frozen leader replaced) are not flagged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leadership_conformance.faults.checker import History, check, load_history

K = "k0"


def ev(t: float, agent: str, event: str, **fields: Any) -> dict[str, Any]:
    return {"t": t, "agent": agent, "key": K, "event": event, **fields}


def elected(t: float, agent: str, token: int) -> dict[str, Any]:
    return ev(t, agent, "transition", value=True, token=token)


def demoted(t: float, agent: str, token: int) -> dict[str, Any]:
    return ev(t, agent, "transition", value=False, token=token, reason="resigned")


def clean_events() -> list[dict[str, Any]]:
    return [
        ev(0.0, "a", "ready"),
        ev(0.0, "b", "ready"),
        ev(0.0, "f", "ready"),
        elected(1.0, "a", 10),
        ev(1.0, "f", "leader", leader="a", token=10),
        ev(1.5, "a", "sample", is_leader=True, token=10, t_read=1.49),
        demoted(2.0, "a", 10),
        elected(2.1, "b", 11),
        ev(2.1, "f", "leader", leader="b", token=11),
        ev(2.5, "a", "sample", is_leader=False, token=None, t_read=2.49),
        ev(2.5, "b", "sample", is_leader=True, token=11, t_read=2.49),
    ]


def clean_records() -> list[dict[str, Any]]:
    return [
        {"event": "fault", "kind": "partition", "target": "a", "t": 1.2, "start": 1.2, "end": 1.8},
        {"event": "truth", "t": 3.0, "key": K, "leader": "b", "token": 11},
        {"event": "stopping", "t": 3.5},
        {"event": "leftovers", "t": 4.0, "key": K, "entries": []},
    ]


def kinds(history: History) -> list[str]:
    return [v.kind for v in check(history).violations]


def test_a_clean_history_passes_and_reports() -> None:
    report = check(History(clean_events(), clean_records(), recovery_bound=1.0))
    assert report.ok, report.table()
    assert report.elections == 2 and report.faults == {"partition": 1}
    assert report.recoveries == []  # a still led when the partition healed: nothing to recover
    table = report.table()
    assert "one leader at a time" in table and "recovery after healed faults" in table


def test_overlapping_intervals_are_caught() -> None:
    events = clean_events()
    events[6] = demoted(2.2, "a", 10)  # a demoted 0.1 s after b was elected
    report = check(History(events, clean_records()))
    assert [v.kind for v in report.violations] == ["overlap"]
    assert "100.00 ms overlap" in report.violations[0].detail


def test_a_sampled_read_during_anothers_term_is_caught() -> None:
    events = [*clean_events(), ev(2.4, "a", "sample", is_leader=True, token=10, t_read=2.35)]
    assert kinds(History(events, clean_records())) == ["overlap"]


def test_a_token_regression_is_caught() -> None:
    events = clean_events()
    events[7] = elected(2.1, "b", 9)
    assert kinds(History(events, clean_records())) == ["token"]
    events[7] = elected(2.1, "b", 10)  # equal is not an increase
    assert kinds(History(events, clean_records())) == ["token"]


def test_no_recovery_after_a_healed_fault_is_caught() -> None:
    events = [e for e in clean_events() if not (e["agent"] == "b" and e["event"] == "transition")]
    events = [e for e in events if e["event"] != "leader" or e["leader"] != "b"]
    records = [
        {"event": "fault", "kind": "partition", "target": "a", "t": 1.9, "start": 1.9, "end": 2.0},
        {"event": "stopping", "t": 10.0},
    ]
    report = check(History(events, records, recovery_bound=3.0))
    assert [v.kind for v in report.violations] == ["recovery"]
    # A leader 4 s after the heal is too late for a 3 s bound, and measured.
    late = [*events, elected(6.0, "b", 11)]
    report = check(History(late, records, recovery_bound=3.0))
    assert [v.kind for v in report.violations] == ["recovery"] and report.recoveries == [4.0]


def test_faults_that_cannot_block_a_key_do_not_count_as_active() -> None:
    events = [e for e in clean_events() if not (e["agent"] == "b" and e["event"] == "transition")]
    events = [*[e for e in events if e["event"] != "leader" or e["leader"] != "b"], elected(6.0, "b", 11)]
    records = [
        {"event": "fault", "kind": "kill_leader", "target": "a", "key": K, "t": 1.9, "start": 1.9, "end": 2.0},
        # Still active when a's fault healed, but neither can keep k0 leaderless:
        {"event": "fault", "kind": "latency", "target": "b", "key": K, "blocks": False, "start": 1.9, "end": 9},
        {"event": "fault", "kind": "partition", "target": "x", "key": "k1", "start": 1.9, "end": 9},
        {"event": "stopping", "t": 10.0},
    ]
    report = check(History(events, records, recovery_bound=3.0))
    assert [v.kind for v in report.violations] == ["recovery"] and report.recoveries == [4.0]


def test_no_single_leader_after_quiescence_is_caught() -> None:
    records = [*clean_records(), {"event": "truth", "t": 3.1, "key": "k1", "leader": None, "leaders": []}]
    assert kinds(History(clean_events(), records)) == ["recovery"]


def test_a_dead_stream_an_error_or_a_traceback_is_caught() -> None:
    ended = [*clean_events(), ev(2.6, "b", "ended")]
    assert kinds(History(ended, clean_records())) == ["dead"]
    failed = [*clean_events(), ev(2.6, "b", "error", error="StoreUnavailableError: x")]
    assert kinds(History(failed, clean_records())) == ["dead"]
    logs = {"k0-a": "INFO ok\nERROR Task was destroyed but it is pending!\n"}
    assert kinds(History(clean_events(), clean_records(), logs)) == ["dead"]
    exited = [*clean_records(), {"event": "exited", "t": 2.7, "agent": "b", "key": K, "code": 1}]
    assert kinds(History(clean_events(), exited)) == ["dead"]
    # Ending after the campaign asked everyone to stop is not a death.
    stopped = [*clean_events(), ev(3.6, "b", "ended")]
    assert check(History(stopped, clean_records())).ok


def test_a_follower_behind_the_true_leader_is_caught() -> None:
    events = [e for e in clean_events() if not (e["agent"] == "f" and e.get("leader") == "b")]
    assert kinds(History(events, clean_records())) == ["follower"]


def test_leftover_entries_are_caught() -> None:
    records = [*clean_records()[:-1], {"event": "leftovers", "t": 4.0, "key": K, "entries": ["k0/lease-1"]}]
    assert kinds(History(clean_events(), records)) == ["leftover"]


def test_a_killed_leader_ends_at_its_kill() -> None:
    events = [
        ev(0.0, "a", "ready"),
        ev(0.0, "b", "ready"),
        elected(1.0, "a", 10),
        elected(3.5, "b", 11),  # after a's ttl; a never reported its demotion: it was killed
        ev(4.0, "a", "ready"),  # restarted
    ]
    records = [{"event": "killed", "t": 1.2, "agent": "a"}]
    assert check(History(events, records)).ok
    assert kinds(History(events, [])) == ["overlap"]  # without the kill it would be two leaders


def test_a_frozen_leader_ends_at_its_freeze_if_it_demotes_at_once_after_the_thaw() -> None:
    events = [
        ev(0.0, "a", "ready"),
        ev(0.0, "b", "ready"),
        elected(1.0, "a", 10),
        elected(5.005, "b", 11),  # elected just after the thaw, before a's loop ran its demotion
        demoted(5.01, "a", 10),  # at once after the thaw
        ev(5.02, "a", "sample", is_leader=False, token=None, t_read=5.015),
    ]
    records = [{"event": "frozen", "t": 1.2, "agent": "a"}, {"event": "thawed", "t": 5.0, "agent": "a"}]
    assert check(History(events, records)).ok
    assert kinds(History(events, [])) == ["overlap"]  # not frozen: 5 ms of two leaders
    # Reading True after the thaw while b leads is an overlap, freeze or not.
    bad = [*events, ev(5.03, "a", "sample", is_leader=True, token=10, t_read=5.025)]
    assert kinds(History(bad, records)) == ["overlap"]


def test_a_frozen_leader_that_leads_on_after_the_thaw_counts_from_the_thaw() -> None:
    events = [
        ev(0.0, "a", "ready"),
        ev(0.0, "b", "ready"),
        elected(1.0, "a", 10),
        elected(3.5, "b", 11),  # during a's freeze
        demoted(4.0, "b", 11),
        demoted(8.0, "a", 10),  # a led on for 3 s after its thaw at 5.0
    ]
    records = [{"event": "frozen", "t": 1.2, "agent": "a"}, {"event": "thawed", "t": 5.0, "agent": "a"}]
    assert check(History(events, records)).ok, "b's term lies inside a's freeze: a could not act"
    late_b = [*events[:4], demoted(6.0, "b", 11), events[5]]
    assert kinds(History(late_b, records)) == ["overlap"], "a leads from its thaw while b still leads"


def test_load_history_reads_a_campaign_directory(tmp_path: Path) -> None:
    (tmp_path / "k0-a.jsonl").write_text("\n".join(json.dumps(e) for e in clean_events()) + "\n")
    (tmp_path / "campaign.jsonl").write_text("\n".join(json.dumps(r) for r in clean_records()) + "\n")
    (tmp_path / "k0-a.log").write_text("Traceback (most recent call last):\n  boom\n")
    history = load_history(str(tmp_path), recovery_bound=1.0)
    assert len(history.events) == len(clean_events()) and len(history.records) == len(clean_records())
    assert kinds(history) == ["dead"]
