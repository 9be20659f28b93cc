"""A backend's author selects the kit's tests by mixin name or by marker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MEMORY_SUITE = str(Path(__file__).with_name("test_memory_conformance.py"))


def _collected(*args: str) -> list[str]:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", MEMORY_SUITE, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return [line.rsplit("::", 1)[1] for line in run.stdout.splitlines() if "::" in line]


def test_a_mixin_is_selected_by_its_name() -> None:
    assert _collected("-k", "TokenTests") == ["test_tokens_strictly_increase_across_terms"]
    assert sorted(_collected("-k", "ProcessFaultTests or ManyElectionsTests")) == [
        "test_frozen_leader_demotes_itself_on_resume",
        "test_killed_leader_replaced_within_ttl",
        "test_many_elections_share_one_session",
    ]


def test_markers_select_the_fault_tests() -> None:
    assert sorted(_collected("-m", "store_faults")) == [
        "test_close_is_prompt_while_the_store_is_paused",
        "test_retry_none_tells_one_story",
        "test_run_store_paused_past_ttl_child_dead_before_expiry",
        "test_store_paused_past_ttl_leader_demotes_before_expiry",
        "test_store_restart_candidates_and_followers_recover",
    ]
    everything = _collected()
    assert len(_collected("-m", "not store_faults and not processes")) == len(everything) - 8
