"""``leadership demo`` against a ZooKeeper with the default tickTime (2 s): the server's own
minimum session timeout (4 s) is above the demo's 1.5 s, and only the server knows it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from leadership.cli.demo import demo_ttl
from leadership_conformance import containers
from leadership_zookeeper.testing import ZooKeeperServer, start_zookeeper

DEMO = [sys.executable, "-m", "leadership", "demo", "--url"]
RUN = [sys.executable, "-m", "leadership", "run", "--store"]

pytestmark = pytest.mark.skipif(not containers.docker_available(), reason="no Docker daemon reachable")


@pytest.fixture(scope="module")
def default_tick_server() -> Iterator[ZooKeeperServer]:
    server = start_zookeeper(tick_time_ms=2000)
    yield server
    server.stop()


def test_demo_finds_a_ttl_the_server_accepts(default_tick_server: ZooKeeperServer) -> None:
    assert demo_ttl(default_tick_server.url) == 4.0  # 2 x tickTime


def test_demo_runs_with_it(default_tick_server: ZooKeeperServer) -> None:
    result = subprocess.run(
        [*DEMO, default_tick_server.url, "--duration", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result
    assert "ttl 4s" in result.stdout and " elected (fencing token " in result.stdout, result.stdout


def test_an_explicit_ttl_below_the_server_minimum_is_one_line_and_exit_2(
    default_tick_server: ZooKeeperServer,
) -> None:
    result = subprocess.run(
        [*DEMO, default_tick_server.url, "--ttl", "1.5", "--duration", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "minimum session timeout" in lines[0], result.stderr


def test_run_with_a_ttl_below_the_server_minimum_exits_2(default_tick_server: ZooKeeperServer) -> None:
    result = subprocess.run(
        [*RUN, default_tick_server.url, "k", "--ttl", "1.5", "--", "true"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result
    assert "leadership run: the election ended: ttl 1.5s is below the minimum session timeout" in result.stderr
