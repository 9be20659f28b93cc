"""``leadership run`` on a real store: two supervisors, each running a child that logs ticks to
a shared file, through resigns, a SIGKILLed supervisor and a paused store. What must hold on
every backend: the children's running intervals never overlap, and each child is gone (not
merely quiet: its process no longer exists) when the next one starts.

Also here: ``leadership watch`` / ``status`` against the store, and that
``leadership.testing.crash`` really ends the crashed process's session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import leadership
from leadership.testing import crash

from .suite import ConformanceBase

__all__ = ["RunCommandTests", "RunProcess", "child_runs"]

CHILD = str(Path(__file__).with_name("_run_child.py"))
#: How long a new process may take to start and connect (Python, plugins, a loaded CI machine):
#: a wait that includes a process start is no latency bound.
PROCESS_START = 30.0
LEADERSHIP = [sys.executable, "-m", "leadership"]


@dataclasses.dataclass
class ChildRun:
    name: str
    pid: int
    token: str
    start: float
    #: The last line it wrote (a tick, "term" or "exit"): it ran at least until then.
    last: float
    #: Other children still alive when it started.
    others_alive: str


def child_runs(log: Path) -> list[ChildRun]:
    runs: dict[int, ChildRun] = {}
    if not log.exists():
        return []
    for line in log.read_text().splitlines():
        name, pid_text, kind, t_text, token, extra = line.split()
        pid, t = int(pid_text), float(t_text)
        if kind == "start":
            runs[pid] = ChildRun(name, pid, token, t, t, extra)
        elif pid in runs:
            runs[pid].last = max(runs[pid].last, t)
    return sorted(runs.values(), key=lambda r: r.start)


def assert_children_never_overlap(log: Path) -> list[ChildRun]:
    runs = child_runs(log)
    for run in runs:
        assert run.others_alive == "-", f"{run.name}'s child (pid {run.pid}) started while {run.others_alive} ran"
    for first, second in itertools.pairwise(runs):
        assert second.start >= first.last, (
            f"children overlap: {first.name}'s (pid {first.pid}) ran until {first.last:.4f}, "
            f"{second.name}'s (pid {second.pid}) started at {second.start:.4f}"
        )
    return runs


class RunProcess:
    """``leadership run --json`` as a real process; its events read from its stderr file."""

    def __init__(
        self,
        url: str,
        key: str,
        name: str,
        ttl: float,
        log: Path,
        *,
        mode: str = "term-exits",
        seconds: float = 0,
        status: int = 0,
        on_exit: str = "exit",
        grace: float = 5.0,
    ) -> None:
        self.name = name
        self.events_path = log.with_name(f"{log.name}.{name}.events")
        self._stderr: IO[str] = self.events_path.open("w")
        args = [*LEADERSHIP, "run", "--store", url, key, "--name", name, "--ttl", str(ttl), "--grace", str(grace)]
        args += ["--on-exit", on_exit, "--json", "--", sys.executable, CHILD, str(log), name, mode, str(seconds)]
        self.proc = subprocess.Popen([*args, str(status)], stdout=subprocess.DEVNULL, stderr=self._stderr)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.events_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_event(self, kind: str, timeout: float, *, after: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events()[after:]:
                if event.get("event") == kind:
                    return event
            if self.proc.poll() is not None and kind not in ("released",):
                break
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: no {kind!r} event within {timeout:g}s: {self.events_path.read_text()}")

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events() if e.get("event") == kind)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


def wait_for_child(log: Path, name: str, timeout: float = PROCESS_START) -> ChildRun:
    """The first run of ``name``'s child, once it has written its start line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in child_runs(log):
            if run.name == name:
                return run
        time.sleep(0.02)
    raise AssertionError(f"{name}'s child did not start within {timeout:g}s")


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LEADERSHIP, *args], capture_output=True, text=True, timeout=timeout, check=False)


class RunCommandTests(ConformanceBase):
    """``leadership run``, ``watch`` and ``status`` as real processes on the store."""

    @pytest.fixture
    def supervisors(self, store_url: str, election_key: str, tmp_path: Path) -> Iterator[Callable[..., RunProcess]]:
        if not self.supports_processes:
            pytest.skip("an in-process store cannot be shared by 'leadership run' processes")
        made: list[RunProcess] = []

        def make(name: str, **kwargs: Any) -> RunProcess:
            run = RunProcess(store_url, election_key, name, self.ttl, tmp_path / "children", **kwargs)
            made.append(run)
            return run

        yield make
        for run in made:
            run.close()

    @property
    def election_bound(self) -> float:
        """How long a waiting supervisor may take to win after the leader's session is gone."""
        return self.ttl + self.store_slack + self.handover_timeout

    def test_run_resigns_hand_over_without_overlap(
        self, supervisors: Callable[..., RunProcess], tmp_path: Path
    ) -> None:
        a = supervisors("a", seconds=0.5, on_exit="resign")
        b = supervisors("b", seconds=0.5, on_exit="resign")
        deadline = time.monotonic() + 4 * self.handover_timeout + PROCESS_START
        while time.monotonic() < deadline and len(child_runs(tmp_path / "children")) < 5:
            time.sleep(0.1)
        a.close()
        b.close()
        runs = assert_children_never_overlap(tmp_path / "children")
        assert len(runs) >= 5, f"only {len(runs)} terms: {runs}"
        assert {r.name for r in runs} == {"a", "b"}, "leadership went back and forth"
        tokens = [int(r.token) for r in runs]
        assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), tokens

    @pytest.mark.processes
    def test_run_killed_leader_child_dies_before_the_next_starts(
        self, supervisors: Callable[..., RunProcess], tmp_path: Path
    ) -> None:
        a = supervisors("a")
        a.wait_event("started", self.handover_timeout + PROCESS_START)
        wait_for_child(tmp_path / "children", "a")
        b = supervisors("b")
        b.wait_event("campaigning", PROCESS_START)
        time.sleep(self.queue_settle)
        killed_at = time.monotonic()
        a.proc.kill()
        a.proc.wait()
        b.wait_event("started", self.election_bound)
        wait_for_child(tmp_path / "children", "b")
        runs = assert_children_never_overlap(tmp_path / "children")
        assert [r.name for r in runs] == ["a", "b"], runs
        assert runs[0].last <= killed_at + 0.1, "a's child kept running after its supervisor was killed"

    @pytest.mark.store_faults
    def test_run_store_paused_past_ttl_child_dead_before_expiry(
        self, supervisors: Callable[..., RunProcess], leadership_server: Any, tmp_path: Path
    ) -> None:
        if not getattr(leadership_server, "can_inject_faults", False):
            pytest.skip("the server handle cannot inject store faults (external server)")
        # The worst child: it ignores SIGTERM, and the grace is far longer than the ttl.
        a = supervisors("a", mode="ignore-term", grace=10 * self.ttl)
        a.wait_event("started", self.handover_timeout + PROCESS_START)
        wait_for_child(tmp_path / "children", "a")
        b = supervisors("b", mode="ignore-term", grace=10 * self.ttl)
        b.wait_event("campaigning", PROCESS_START)
        time.sleep(self.queue_settle)
        paused_at = time.monotonic()
        leadership_server.pause()
        try:
            stopped = a.wait_event("stopped", self.ttl + PROCESS_START)
            time.sleep(max(0.0, paused_at + self.ttl + 0.5 - time.monotonic()))
        finally:
            leadership_server.unpause()
        # The store could expire a's session ttl after its last confirmed refresh, which was
        # before the pause: a's child must not have run past that.
        a_child = child_runs(tmp_path / "children")[0]
        assert a_child.name == "a" and a_child.last < paused_at + self.ttl, "a's child outlived the ttl"
        assert stopped["killed"] and stopped["reason"] == "session_lost", stopped
        print(
            f"\nleadership run on {type(self).__name__}: child dead {1000 * stopped['loss_to_dead']:.1f} ms "
            f"after the loss; SIGKILL due at {1000 * stopped['bound']:.1f} ms, store expiry at the earliest "
            f"{1000 * stopped['store_expiry']:.1f} ms"
        )
        deadline = time.monotonic() + 2 * self.ttl + self.store_slack + self.recovery_time
        while time.monotonic() < deadline and len(child_runs(tmp_path / "children")) < 2:
            time.sleep(0.1)
        runs = assert_children_never_overlap(tmp_path / "children")
        assert len(runs) >= 2, f"nobody ran the command after the store came back: {runs}"

    def released_after(self, store_url: str, key: str, end: Callable[[], None]) -> float:
        """Run ``end`` (which ends a leader in another process); return when a follower in this
        process, set up before, saw nobody leading after having seen a leader."""
        with leadership.connect(store_url) as store:
            follower = leadership.Follower(store, key)
            seen_leader = threading.Event()
            gone: list[float] = []

            def follow() -> None:
                for term in follower.terms():
                    if term is not None:
                        seen_leader.set()
                    elif seen_leader.is_set():
                        gone.append(time.monotonic())
                        return

            thread = threading.Thread(target=follow, daemon=True)
            thread.start()
            # A follower may miss a short term (a polling store, a retry after a busy store): be
            # sure it saw this one before the leader goes, or "gone" could never be observed.
            assert seen_leader.wait(self.handover_timeout + PROCESS_START), "the follower never saw the leader"
            end()
            thread.join(2 * self.ttl + self.store_slack + PROCESS_START)
            follower.stop()
        assert gone, "the follower never saw the leader go"
        return gone[0]

    def test_run_exit_status_and_release_at_once(self, store_url: str, election_key: str, tmp_path: Path) -> None:
        if not self.supports_processes:
            pytest.skip("an in-process store cannot be shared by 'leadership run' processes")
        log = tmp_path / "children"
        # The child lives long enough for the follower to see the term before it ends.
        run = RunProcess(store_url, election_key, "a", self.ttl, log, seconds=3.0, status=3)

        def end() -> None:
            assert run.proc.wait(self.handover_timeout + PROCESS_START) == 3

        try:
            gone = self.released_after(store_url, election_key, end)
        finally:
            run.close()
        # Released when the child exited, not left to expire (which takes at least 2/3 of the ttl
        # after the child's end: the last refresh was at most a third of the ttl before it).
        exited = child_runs(log)[0].last
        assert gone - exited < self.ttl / 2, f"leadership released {gone - exited:.2f}s after the child exited"

    def test_run_forwards_sigterm_and_exits_with_the_child_status(
        self, store_url: str, election_key: str, tmp_path: Path
    ) -> None:
        if not self.supports_processes:
            pytest.skip("an in-process store cannot be shared by 'leadership run' processes")
        log = tmp_path / "children"
        run = RunProcess(store_url, election_key, "a", self.ttl, log)

        def end() -> None:
            run.wait_event("started", self.handover_timeout + PROCESS_START)
            wait_for_child(log, "a")
            run.proc.send_signal(signal.SIGTERM)
            assert run.proc.wait(30) == 42  # the child's status on SIGTERM

        try:
            gone = self.released_after(store_url, election_key, end)
        finally:
            run.close()
        kinds = [line.split()[2] for line in log.read_text().splitlines()]
        assert kinds[-1] == "term"
        assert gone - child_runs(log)[0].last < self.ttl / 2, "not released at once"

    def test_bad_input_for_this_store_is_one_line_and_exit_2(self, store_url: str, election_key: str) -> None:
        """A ttl below this store's minimum and an option its URL does not know are refused by the
        command in one line with exit 2, before the store is used."""
        option = "&" if "?" in store_url else "?"
        cases = [
            (["run", "--store", store_url, "--ttl", "0.001", election_key, "--", "true"], "below the minimum"),
            (["campaign", "--store", store_url, "--ttl", "0.001", election_key, "me"], "below the minimum"),
            (["run", "--store", f"{store_url}{option}bogus_option=1", election_key, "--", "true"], "bogus_option"),
        ]
        for args, message in cases:
            result = subprocess.run([*LEADERSHIP, *args], capture_output=True, text=True, timeout=PROCESS_START)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2, (args, result.returncode, result.stderr)
            assert len(lines) == 1 and message in lines[0], (args, result.stderr)

    def test_status_and_watch_follow_the_election(self, store_url: str, election_key: str, tmp_path: Path) -> None:
        if not self.supports_processes:
            pytest.skip("an in-process store cannot be shared with 'leadership' command processes")
        nobody = cli("status", "--store", store_url, election_key, "--json")
        assert nobody.returncode == 3 and json.loads(nobody.stdout)["leader"] is None, nobody
        out_path = tmp_path / "watch.out"
        with out_path.open("w") as out:
            watch = subprocess.Popen([*LEADERSHIP, "watch", "--store", store_url, election_key], stdout=out)

        def printed(lines: int) -> None:
            deadline = time.monotonic() + 30
            while len(out_path.read_text().splitlines()) < lines and time.monotonic() < deadline:
                time.sleep(0.02)

        try:
            printed(1)  # watch is connected: it printed "none"
            with leadership.connect(store_url) as store:
                candidate = leadership.Candidate(store, election_key, "alpha", ttl=self.ttl)
                term = candidate.wait_elected(self.handover_timeout)
                led = cli("status", "--store", store_url, election_key)
                assert led.returncode == 0 and led.stdout.split() == ["alpha", "(token", f"{term.token})"], led
                candidate.stop()
            printed(3)
        finally:
            watch.send_signal(signal.SIGINT)
            assert watch.wait(30) == 0
        lines = out_path.read_text().splitlines()
        assert [line.split()[1:] for line in lines] == [["none", "-"], ["alpha", str(term.token)], ["none", "-"]], lines

    def test_demo_on_the_store_survives_crashes_and_ends_on_time(self, store_url: str) -> None:
        """``leadership demo --url``: the default ttl is one the store accepts, every leader
        crashes, and another is elected each time; the demo exits on time."""
        duration = 2.5 + self.ttl + self.store_slack + 3
        started = time.monotonic()
        result = cli("demo", "--url", store_url, "--duration", f"{duration:g}", "--crash-rate", "1", timeout=120)
        took = time.monotonic() - started
        assert result.returncode == 0, result
        assert "Traceback" not in result.stderr, result.stderr
        elected = [line.split()[1:] for line in result.stdout.splitlines() if " elected (fencing token " in line]
        assert len({who for who, *_ in elected}) >= 2, f"nobody took over after a crash:\n{result.stdout}"
        tokens = [int(words[-1].rstrip(")")) for words in elected]
        assert tokens == sorted(tokens), result.stdout
        assert "CRASHES" in result.stdout and "demo finished" in result.stdout
        # From the command's start (asking the store for a ttl included) to its end; the process
        # start before it is the machine's, not the demo's.
        inside = float(result.stdout.split("demo finished (")[1].split("s in all)")[0])
        assert inside < duration + 6, f"a {duration:g}s demo took {inside:.1f}s"
        assert took < duration + PROCESS_START

    def test_testing_crash_ends_the_session(self, stores: Callable[[], leadership.Store], election_key: str) -> None:
        """``leadership.testing.crash`` must leave nothing refreshing the session (no client thread
        of the backend keeping it alive): the next candidate wins within the ttl."""
        a_store, b_store = stores(), stores()
        a = leadership.Candidate(a_store, election_key, "a", ttl=self.ttl)
        a.wait_elected(self.handover_timeout)
        b = leadership.Candidate(b_store, election_key, "b", ttl=self.ttl)
        for _ in b.run_for_election():
            break
        time.sleep(self.queue_settle)
        crashed_at = time.monotonic()
        crash(a_store)
        b.wait_elected(self.election_bound)
        took = time.monotonic() - crashed_at
        assert took >= self.ttl * 0.5, f"b won {took:.2f}s after the crash: a's session was released, not lost"
