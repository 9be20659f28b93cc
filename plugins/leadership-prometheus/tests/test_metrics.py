"""The metrics after real elections on the memory store, scraped over HTTP from a real
prometheus_client endpoint; the installed plugin with no code change; ``leadership run
--metrics-port``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import leadership
from leadership.testing import memory_cluster
from leadership_prometheus import Metrics

LEADERSHIP_RUN = [sys.executable, "-m", "leadership", "run", "--store"]
LOOPBACK = ["--metrics-address", "127.0.0.1"]
CHILD = ["--", "sh", "-c", "echo $LEADERSHIP_TOKEN; sleep 60"]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served() -> Iterator[tuple[Metrics, int]]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield metrics, server.server_port
    server.shutdown()
    thread.join(5)


def test_values_after_elections(served: tuple[Metrics, int]) -> None:
    metrics, port = served
    pm = leadership.get_plugin_manager(load_entrypoints=False)
    pm.register(metrics)
    name = f"prom-{uuid.uuid4().hex[:8]}"
    with leadership.connect(f"memory://{name}", plugin_manager=pm) as store:
        a = leadership.Candidate(store, "jobs/k", "a", ttl=0.3)
        a.wait_elected(5)
        b = leadership.Candidate(store, "jobs/k", "b", ttl=0.3)
        for _ in b.run_for_election():
            break
        time.sleep(0.4)  # a few keepalives
        a.resign()
        term_b = b.wait_elected(5)
        a.stop()
        memory_cluster(name).set_available(False)  # refreshes fail: store errors
        time.sleep(0.15)
        memory_cluster(name).set_available(True)
        samples = scrape(port)
        b.stop()

    def value(metric: str, **labels: str) -> float:
        return samples[(metric, tuple(sorted(labels.items())))]

    assert value("leadership_is_leader", key="jobs/k", name="a") == 0
    assert value("leadership_is_leader", key="jobs/k", name="b") == 1
    assert value("leadership_term_token", key="jobs/k", name="b") == term_b.token
    assert ("leadership_term_token", (("key", "jobs/k"), ("name", "a"))) not in samples
    assert value("leadership_transitions_total", key="jobs/k", reason="elected") == 2
    assert value("leadership_transitions_total", key="jobs/k", reason="resigned") == 1
    assert value("leadership_store_errors_total", operation="refresh") >= 1
    assert value("leadership_session_refresh_seconds_count") >= 3
    assert value("leadership_session_refresh_seconds_bucket", le="+Inf") == value(
        "leadership_session_refresh_seconds_count"
    )


def test_installed_plugin_works_with_no_code_change() -> None:
    """Plain library use in a fresh process: the metrics are in the default registry."""
    code = """
import leadership
from prometheus_client import generate_latest
store = leadership.connect("memory://plain")
leadership.Candidate(store, "k", "me", ttl=1).wait_elected(5)
print(generate_latest().decode())
store.close()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert 'leadership_is_leader{key="k",name="me"} 1.0' in out, out
    assert 'leadership_transitions_total{key="k",reason="elected"} 1.0' in out


def test_leadership_run_serves_the_metrics() -> None:
    port = free_port()
    url = f"memory://run-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [*LEADERSHIP_RUN, url, "jobs/nightly", "--name", "n1", "--metrics-port", str(port), *LOOPBACK, *CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        token = int(proc.stdout.readline())
        deadline = time.monotonic() + 10
        samples: Samples = {}
        while time.monotonic() < deadline:
            try:
                samples = scrape(port)
            except OSError:
                time.sleep(0.05)
                continue
            break
        assert samples[("leadership_is_leader", (("key", "jobs/nightly"), ("name", "n1")))] == 1
        assert samples[("leadership_term_token", (("key", "jobs/nightly"), ("name", "n1")))] == token
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_metrics_port_in_use_is_a_usage_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = subprocess.run(
            [*LEADERSHIP_RUN, "memory://x", "k", "--metrics-port", str(port), *LOOPBACK, "--", "true"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result
    assert f"--metrics-port {port}" in result.stderr
