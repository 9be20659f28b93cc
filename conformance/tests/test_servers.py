"""The kit's generic server machinery: discovery through entry points, the URL variable, the
names that moved into the plugins, and a store run as a local process (a real HTTP server
process stands in for a store: what is tested is the handle's control of the process)."""

from __future__ import annotations

import http.client
import sys
import time
import warnings
from collections.abc import Iterator

import pytest

from leadership_conformance import servers
from leadership_conformance.containers import free_ports, http_request
from leadership_conformance.memory import MemoryServer
from leadership_conformance.process import ProcessServer
from leadership_conformance.servers import (
    ExternalServer,
    FaultInjectionUnavailable,
    Member,
    ServerStartError,
    StoreServer,
    server_for,
)
from leadership_conformance.suite import ConformanceSuite


def test_an_unknown_backend_names_what_is_registered() -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'redis'.*registered: .*memory"):
        server_for("redis")


def test_the_memory_store_is_registered_like_any_plugin() -> None:
    assert servers.server_class("memory") is MemoryServer
    with server_for("memory") as s:
        assert s.url.startswith("memory://") and s.can_inject_faults


def test_the_url_variable_of_an_unregistered_store_gives_a_url_only_handle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADERSHIP_TEST_NOSUCHSTORE_URL", "nosuchstore://a:1,b:2/base?x=1")
    s = server_for("nosuchstore")
    assert isinstance(s, ExternalServer)
    assert s.url == "nosuchstore://a:1,b:2/base?x=1"
    assert [m.address for m in s.members] == ["a:1", "b:2"]
    assert not s.can_inject_faults and s.request_count() is None
    with pytest.raises(FaultInjectionUnavailable, match="can_inject_faults is False"):
        s.pause()


def test_a_name_that_moved_out_of_the_kit_says_where_it_went() -> None:
    with pytest.raises(AttributeError, match=r"moved into their plugins.*\[testing\] extra"):
        _ = servers.start_nosuchstore  # type: ignore[attr-defined]
    # Any registered handle's module is searched, the kit's own memory handle included.
    ep = servers.registered_servers()["memory"]
    name = ep.value.partition(":")[2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        moved = getattr(servers, name)
    assert moved is ep.load()
    assert any(f"moved to {ep.module}.{name}" in str(w.message) for w in caught)


def test_the_old_fault_switch_on_the_test_class_is_refused() -> None:
    with pytest.raises(TypeError, match="can_inject_faults"):
        type("TestOld", (ConformanceSuite,), {"supports_store_faults": False})


# --- a store run as a local process -----------------------------------------------------------

_SERVE = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


class HttpProcessServer(ProcessServer):
    scheme = "http-test"

    def command(self, member: Member) -> list[str]:
        return [sys.executable, "-c", _SERVE, str(member.port)]

    def check_serving(self, member: Member) -> None:
        status, _ = http_request(member.host, member.port, "GET", "/")
        if status != 200:
            raise RuntimeError(f"answered {status}")

    @classmethod
    def start(cls, members: int = 1) -> HttpProcessServer:
        ports = free_ports(members)
        return cls([Member(i, f"m{i}", "127.0.0.1", p) for i, p in enumerate(ports)]).launch()


@pytest.fixture
def processes() -> Iterator[StoreServer]:
    with HttpProcessServer.start(members=2) as s:
        yield s


def _answers(member: Member) -> bool:
    try:
        return http_request(member.host, member.port, "GET", "/")[0] == 200
    except (OSError, http.client.HTTPException):
        return False


def test_a_process_store_pauses_restarts_and_loses_a_member(processes: StoreServer) -> None:
    first, second = processes.members
    assert processes.can_inject_faults and processes.url == f"http-test://{first.address},{second.address}"
    assert _answers(first) and _answers(second)

    processes.pause()
    with pytest.raises(ServerStartError, match="did not serve within the deadline"):
        processes.wait_serving(timeout=0.3)
    processes.unpause()
    processes.wait_serving(timeout=5)

    pid = first.handle.pid
    processes.restart()
    assert first.handle.pid != pid and _answers(first), "restart starts the same command on the same port"

    processes.kill_member(1)
    assert not second.running and not _answers(second) and _answers(first)
    processes.start_member(1)
    assert second.running and _answers(second)


def test_a_process_that_exits_at_start_fails_with_its_log() -> None:
    class Broken(HttpProcessServer):
        def command(self, member: Member) -> list[str]:
            return [sys.executable, "-c", "import sys; print('no such store'); sys.exit(3)"]

    t0 = time.monotonic()
    with pytest.raises(ServerStartError, match=r"(?s)exited with code 3.*no such store"):
        Broken.start()
    assert time.monotonic() - t0 < 10, "an exited process fails at once, not at the deadline"


def test_stopping_a_process_store_ends_its_processes() -> None:
    s = HttpProcessServer.start()
    member = s.members[0]
    s.stop()
    s.stop()
    assert member.handle.poll() is not None and not _answers(member)
    assert not s.workdir.exists()
