"""The URL a SQLite store takes, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

import leadership


def test_a_file_path_and_options(tmp_path: Path) -> None:
    with leadership.connect(f"sqlite://{tmp_path}/s.db?poll=0.02&busy_timeout=1") as store:
        backend = store.aio.backend
        assert (backend.poll, backend.busy_timeout) == (0.02, 1.0)  # type: ignore[attr-defined]
        with leadership.hold(store, "jobs/a", "me", ttl=1, timeout=5) as lease:
            assert lease.term.token == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://host:1/s.db", "takes a file path, not a host"),
        ("sqlite://", "needs the database file's path"),
        ("sqlite:///tmp/s.db?poll=never", "poll='never' is invalid"),
        ("sqlite:///tmp/s.db?pol=1", r"unknown option\(s\) pol; allowed options: busy_timeout, poll"),
    ],
)
def test_bad_urls_fail_at_connect(url: str, message: str) -> None:
    with pytest.raises(leadership.ConfigurationError, match=message):
        leadership.connect(url)


def test_a_file_that_cannot_be_opened_is_a_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(leadership.PermanentStoreError, match="unable to open"):
        leadership.connect(f"sqlite://{tmp_path}/no/such/dir/s.db")
