"""``leadership run``, ``watch``, ``status`` and ``campaign`` on the memory store.

The memory store lives in one process, so two supervisors cannot share it: the tests with real
supervisors racing each other on real stores are in the conformance kit (RunCommandTests). Here:
one supervisor as a real process (signals, exit statuses, the child's environment, run killed),
and the commands in this process where a loss of leadership must be injected.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import leadership
from leadership.cli import build_parser, main
from leadership.testing import memory_cluster

LEADERSHIP = [sys.executable, "-m", "leadership"]


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LEADERSHIP, *args], capture_output=True, text=True, timeout=timeout, check=False)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; its parent (gone) no longer reaps it at once.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def url() -> str:
    return f"memory://cli-{uuid.uuid4().hex[:8]}"


# -- input, help ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "k", "--", "true"], "no store"),
        (["run", "--store", "memory://x", "k"], "no command to run"),
        (["run", "--store", "memory://x", "k", "--", "no-such-command-here"], "not found on PATH"),
        (["run", "--store", "memory://x", "k", "--", __file__], "not an executable file"),
        (["run", "--store", "memory://x", "a//b", "--", "true"], "empty segment"),
        (["run", "--store", "nosuch://h", "k", "--", "true"], "no leadership backend for scheme 'nosuch'"),
        (["run", "--store", "memory://x", "k", "--grace", "-1", "--", "true"], "seconds >= 0"),
        # A ttl below a store's minimum, an unknown URL option: every store's in the kit's
        # RunCommandTests (this session installs no store plugin).
        (["run", "--store", "memory://x", "--ttl", "0.001", "k", "--", "true"], "below the minimum"),
        (["run", "--store", "memory://x?bogus=1", "k", "--", "true"], "bogus"),
        (["status", "k"], "no store"),
        (["watch", "--store", "memory://x", "/k"], "election key"),
        (["status", "--store", "memory://x", "k", "--", "true"], "'--' is for the command"),
        (["run", "--store", "memory://x", "k", "--on-exit", "never", "--", "true"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    # Were the store contacted (nothing listens on 127.0.0.1:9), run would retry until the timeout.
    result = run_cli(*args, timeout=60)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert lines[0].startswith("leadership")


def test_no_command_prints_help_and_version() -> None:
    result = run_cli()
    assert result.returncode == 0 and "usage: leadership" in result.stdout and "run" in result.stdout
    version = run_cli("--version")
    assert version.stdout.strip() == f"leadership {leadership.__version__}"


def test_every_option_has_help_and_every_command_an_example() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subparsers.choices.items():  # type: ignore[union-attr]
        assert "example" in (sub.epilog or ""), f"leadership {name} --help has no usage example"
        assert f"leadership {name}" in (sub.epilog or ""), name
        for action in sub._actions:
            assert action.help, f"leadership {name}: {action.option_strings or action.dest} has no help text"
    for action in parser._actions:
        assert action.help, action


def test_store_defaults_to_the_environment(url: str) -> None:
    env = {**os.environ, "LEADERSHIP_STORE": url}
    result = subprocess.run(
        [*LEADERSHIP, "run", "k", "--", "sh", "-c", "echo $LEADERSHIP_STORE"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == url, result


# -- run as a real process -----------------------------------------------------------------------
def test_child_gets_the_term_in_its_environment_and_run_exits_with_its_status() -> None:
    result = run_cli(
        "run",
        "--store",
        "memory://u:secret@x",
        "jobs/nightly",
        "--name",
        "n1",
        "--json",
        "--",
        "sh",
        "-c",
        'echo "$LEADERSHIP_TOKEN $LEADERSHIP_KEY $LEADERSHIP_NAME $LEADERSHIP_STORE"; exit 7',
    )
    assert result.returncode == 7, result
    token, key, name, store = result.stdout.split()
    assert int(token) > 0 and key == "jobs/nightly" and name == "n1"
    assert "secret" not in store and "secret" not in result.stderr
    import json

    events = [json.loads(line)["event"] for line in result.stderr.splitlines()]
    assert events == ["campaigning", "elected", "started", "exited", "released"], result.stderr


def _start_run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*LEADERSHIP, "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _child_pid(proc: subprocess.Popen[str]) -> int:
    """The pid the child prints as its first line."""
    assert proc.stdout is not None
    return int(proc.stdout.readline())


def test_sigterm_is_forwarded_and_run_exits_with_the_child_status(url: str) -> None:
    proc = _start_run(
        "--store", url, "k", "--", "sh", "-c", "trap 'exit 42' TERM; echo $$; while :; do sleep 0.05; done"
    )
    child = _child_pid(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 42
    assert not alive(child)


def test_sigint_is_forwarded_too(url: str) -> None:
    proc = _start_run("--store", url, "k", "--", "sh", "-c", "trap 'exit 5' INT; echo $$; while :; do sleep 0.05; done")
    _child_pid(proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 5


def test_child_ignoring_sigterm_is_killed_after_the_grace(url: str) -> None:
    proc = _start_run("--store", url, "k", "--grace", "0.5", "--", "sh", "-c", "trap '' TERM; echo $$; sleep 60")
    child = _child_pid(proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 128 + signal.SIGKILL
    took = time.monotonic() - t0
    assert 0.5 <= took < 5, took
    assert not alive(child)


def test_killed_run_takes_its_child_and_grandchildren_along(url: str) -> None:
    # The shell forks a grandchild (the sleep in the background) and prints both pids.
    proc = _start_run("--store", url, "k", "--", "sh", "-c", "sleep 60 & echo $!; echo $$; wait")
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    child = int(proc.stdout.readline())
    assert alive(child) and alive(grandchild)
    proc.kill()
    proc.wait(10)
    wait_for(lambda: not alive(child) and not alive(grandchild), 5, "the child and grandchild to die with run")


def test_on_exit_restart_reruns_the_command_while_leading(url: str, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    proc = _start_run("--store", url, "k", "--on-exit", "restart", "--", "sh", "-c", f"echo $LEADERSHIP_TOKEN >> {log}")
    wait_for(lambda: log.exists() and len(log.read_text().split()) >= 2, 15, "a second run")
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    tokens = log.read_text().split()
    assert len(set(tokens)) == 1, "restarts happen within one term"


def test_on_exit_resign_campaigns_again(url: str, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    proc = _start_run("--store", url, "k", "--on-exit", "resign", "--", "sh", "-c", f"echo $LEADERSHIP_TOKEN >> {log}")
    wait_for(lambda: log.exists() and len(log.read_text().split()) >= 2, 15, "a second term")
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    tokens = [int(t) for t in log.read_text().split()]
    assert tokens == sorted(set(tokens)), f"each run is a new, later term: {tokens}"


# -- run in this process, where the test can take leadership away --------------------------------
def _in_main_thread(argv: list[str], meanwhile: object) -> int:
    """main(argv) in this (the main) thread, ``meanwhile()`` in another; SIGTERM ends run."""
    errors: list[BaseException] = []

    def side() -> None:
        try:
            meanwhile()  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=side)
    thread.start()
    try:
        return main(argv)
    finally:
        thread.join(30)
        if errors:
            raise errors[0]


def test_session_lost_kills_the_child_before_the_store_could_let_another_win(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pid_file = tmp_path / "pid"
    cluster_name = url.removeprefix("memory://")
    ttl = 1.0
    state: dict[str, float] = {}

    def meanwhile() -> None:
        wait_for(pid_file.exists, 10, "the child")
        wait_for(lambda: pid_file.read_text().strip() != "", 5, "the child's pid")
        child = int(pid_file.read_text())
        # The store stops answering: no refresh is confirmed, the session's deadline passes.
        memory_cluster(cluster_name).set_available(False)
        state["unavailable"] = time.monotonic()
        wait_for(lambda: not alive(child), 2 * ttl + 1, "the child to be killed")
        state["dead"] = time.monotonic()
        memory_cluster(cluster_name).set_available(True)

    status = _in_main_thread(
        [
            "run",
            "--store",
            url,
            "k",
            "--ttl",
            str(ttl),
            "--grace",
            "30",
            "--json",
            "--",
            "sh",
            "-c",
            f"trap '' TERM; echo $$ > {pid_file}; sleep 60",
        ],
        meanwhile,
    )
    import json

    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    kinds = [e["event"] for e in events]
    assert "lost" in kinds and "stopped" in kinds, kinds
    stopped = next(e for e in events if e["event"] == "stopped")
    assert stopped["killed"] is True and stopped["reason"] == "session_lost"
    # The child ignored SIGTERM: it got SIGKILL within the bound (half the safety margin of
    # 0.1 s for a 1 s ttl), not after the 30 s grace.
    with capsys.disabled():
        print(
            f"\nleadership run on memory: child dead {1000 * stopped['loss_to_dead']:.1f} ms after the loss; "
            f"SIGKILL due at {1000 * stopped['bound']:.1f} ms, store expiry at the earliest "
            f"{1000 * stopped['store_expiry']:.1f} ms"
        )
    assert stopped["loss_to_dead"] < stopped["store_expiry"], stopped
    assert stopped["bound"] <= 0.05 + 0.01, stopped  # half the 0.1 s safety margin
    # ... and the whole thing happened before the store could have expired the session.
    assert state["dead"] - state["unavailable"] < ttl, state
    assert status == 128 + signal.SIGTERM


# -- watch, status, campaign -----------------------------------------------------------------
@pytest.fixture
def store(url: str) -> Iterator[leadership.Store]:
    with leadership.connect(url) as s:
        yield s


def test_status_exit_3_when_nobody_leads_and_0_with_the_leader(
    url: str, store: leadership.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--store", url, "k"]) == 3
    assert capsys.readouterr().out.strip() == "none"
    candidate = leadership.Candidate(store, "k", "alice", ttl=5)
    term = candidate.wait_elected(5)
    assert main(["status", "--store", url, "k", "--json"]) == 0
    import json

    answer = json.loads(capsys.readouterr().out)
    assert answer["leader"] == "alice" and answer["token"] == term.token and answer["key"] == "k"


def test_status_wait_returns_once_someone_leads(url: str, store: leadership.Store) -> None:
    def later() -> None:
        time.sleep(0.5)
        leadership.Candidate(store, "k", "bob", ttl=5).wait_elected(5)

    thread = threading.Thread(target=later)
    thread.start()
    t0 = time.monotonic()
    assert main(["status", "--store", url, "k", "--wait", "10"]) == 0
    assert time.monotonic() - t0 < 5
    thread.join()
    t0 = time.monotonic()
    assert main(["status", "--store", url, "other", "--wait", "0.3"]) == 3
    assert 0.3 <= time.monotonic() - t0 < 5


def test_watch_prints_each_change_until_interrupted(
    url: str, store: leadership.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    def elections() -> None:
        a = leadership.Candidate(store, "k", "a", ttl=5)
        a.wait_elected(5)
        b = leadership.Candidate(store, "k", "b", ttl=5)
        for _ in b.run_for_election():
            break
        time.sleep(0.3)
        a.stop()
        b.wait_elected(5)
        time.sleep(0.3)
        b.stop()
        time.sleep(0.3)

    assert _in_main_thread(["watch", "--store", url, "k"], elections) == 0
    lines = capsys.readouterr().out.splitlines()
    leaders = [line.split()[1] for line in lines]
    if leaders[0] == "none":  # watch may start before a is elected
        leaders = leaders[1:]
    assert leaders == ["a", "b", "none"], lines
    tokens = [line.split()[2] for line in lines if line.split()[1] != "none"]
    assert int(tokens[0]) < int(tokens[1]), lines


def test_campaign_prints_elected_and_releases_on_interrupt(
    url: str, store: leadership.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    def meanwhile() -> None:
        follower = leadership.Follower(store, "k")
        for term in follower.terms():
            if term is not None:
                assert term.leader == "me"
                break
        follower.stop()

    assert _in_main_thread(["campaign", "--store", url, "k", "me", "--ttl", "5"], meanwhile) == 0
    out = capsys.readouterr().out
    assert "me campaigning for k" in out and "me elected for k (token" in out
    # Released at once, not after the ttl.
    follower = leadership.Follower(store, "k")
    t0 = time.monotonic()
    for term in follower.terms():
        if term is None:
            break
    follower.stop()
    assert time.monotonic() - t0 < 1.0
