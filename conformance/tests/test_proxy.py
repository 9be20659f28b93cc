"""The fault proxy against a local echo server: every fault does what it says, both ways."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from leadership_conformance.proxy import FaultLink, FaultProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = _Server(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[0], server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: tuple[str, int]) -> Iterator[FaultProxy]:
    with FaultProxy(*echo) as p:
        yield p


def connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=5)


def roundtrip(sock: socket.socket, data: bytes = b"ping", timeout: float = 2.0) -> bytes:
    sock.settimeout(timeout)
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed")
        got += chunk
    return got


def silent(sock: socket.socket, wait: float = 0.4) -> bool:
    """Nothing arrives within ``wait`` and the connection is not closed."""
    sock.settimeout(wait)
    try:
        data = sock.recv(65536)
    except TimeoutError:
        return True
    del data  # bytes arrived, or the connection closed
    return False


def wait_until(predicate: object, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_forwards_both_ways(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        assert roundtrip(s, b"hello") == b"hello"
        big = bytes(range(256)) * 4096  # 1 MiB: several chunks, flow control on the way
        assert roundtrip(s, big, timeout=10) == big
    assert proxy.accepted == 1


def test_partition_holds_then_heal_delivers_in_order(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        assert roundtrip(s) == b"ping"
        proxy.partition()
        s.sendall(b"held")
        assert silent(s), "a partitioned link passes nothing and does not close"
        # New connections are accepted but held: nothing reaches the store or comes back.
        with connect(proxy) as s2:
            s2.sendall(b"new")
            assert silent(s2)
            proxy.heal()
            s2.settimeout(2)
            assert s2.recv(3) == b"new", "a held connection reaches the store after healing"
        s.settimeout(2)
        assert s.recv(4) == b"held", "bytes held during the partition are delivered after it"
        assert roundtrip(s, b"after") == b"after"


def test_heal_with_reset_closes_connections(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        assert roundtrip(s) == b"ping"
        proxy.partition()
        proxy.heal(reset=True)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            roundtrip(s)
    with connect(proxy) as s:
        assert roundtrip(s) == b"ping", "new connections work after a reset"


def test_reset_closes_every_connection(proxy: FaultProxy) -> None:
    socks = [connect(proxy) for _ in range(3)]
    for s in socks:
        assert roundtrip(s) == b"ping"
    assert wait_until(lambda: proxy.connections == 3)
    proxy.reset()
    for s in socks:
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            roundtrip(s)
        s.close()
    assert wait_until(lambda: proxy.connections == 0)


def test_one_way_cut_holds_client_to_store_only(echo: tuple[str, int]) -> None:
    # A store that also speaks first: it sends a greeting every 0.1 s, so we can see the
    # store->client direction flow while client->store is cut.
    greeting = socket.socket()
    greeting.bind(("127.0.0.1", 0))
    greeting.listen()
    stop = threading.Event()
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = greeting.accept()
        conn.settimeout(0.1)
        with conn:
            while not stop.is_set():
                conn.sendall(b"t")
                try:
                    data = conn.recv(100)
                except TimeoutError:
                    continue
                if not data:
                    return
                received.append(data)

    threading.Thread(target=serve, daemon=True).start()
    with FaultProxy(*greeting.getsockname()) as proxy, connect(proxy) as s:
        s.settimeout(2)
        assert s.recv(1) == b"t"
        proxy.cut()
        s.sendall(b"lost?")
        time.sleep(0.5)
        assert received == [], "client->store must be held by a one-way cut"
        s.settimeout(2)
        assert s.recv(100).startswith(b"t"), "store->client still flows under a one-way cut"
        proxy.heal()
        assert wait_until(lambda: b"".join(received) == b"lost?")
    stop.set()
    greeting.close()


def test_delay_adds_latency_each_way(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        t0 = time.monotonic()
        roundtrip(s)
        base = time.monotonic() - t0
        proxy.delay(150)
        t0 = time.monotonic()
        assert roundtrip(s) == b"ping"
        slow = time.monotonic() - t0
        assert slow >= 0.3, f"150 ms each way must add >= 300 ms to a round trip, got {slow * 1000:.0f} ms"
        proxy.delay(0)
        t0 = time.monotonic()
        roundtrip(s)
        assert time.monotonic() - t0 < base + 0.2
    with pytest.raises(ValueError, match=">= 0"):
        proxy.delay(-1)


def test_store_down_closes_the_client(echo: tuple[str, int]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with FaultProxy("127.0.0.1", dead_port) as proxy, connect(proxy) as s:
        s.settimeout(2)
        assert s.recv(10) == b"", "a refused store connection closes the client's"


def test_link_rewrites_each_member_and_faults_all(echo: tuple[str, int]) -> None:
    host, port = echo
    other = _Server(("127.0.0.1", 0), _Echo)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    oport = other.server_address[1]
    members = [SimpleNamespace(host=host, port=port), SimpleNamespace(host=host, port=oport)]
    server = SimpleNamespace(url=f"etcd://{host}:{port},{host}:{oport}?x=1", members=members)
    try:
        with FaultLink(server) as link:
            a, b = link.proxies
            assert link.url == f"etcd://{a.address},{b.address}?x=1"
            socks = [connect(a), connect(b)]
            for s in socks:
                assert roundtrip(s) == b"ping"
            link.partition()
            for s in socks:
                s.sendall(b"x")
                assert silent(s)
            link.heal(reset=True)
            for s in socks:
                with pytest.raises((ConnectionResetError, BrokenPipeError)):
                    roundtrip(s)
                s.close()
            assert [what for _, what in link.faults] == ["partition", "heal+reset"]
    finally:
        other.shutdown()
        other.server_close()


def test_link_proxies_only_the_members_the_url_names() -> None:
    members = [SimpleNamespace(host="127.0.0.1", port=1)]
    with pytest.raises(ValueError, match="names none of the members"):
        FaultLink(SimpleNamespace(url="etcd://127.0.0.1:2", members=members))
    with pytest.raises(ValueError, match="appears 2 times"):
        FaultLink(SimpleNamespace(url="etcd://127.0.0.1:1,127.0.0.1:1", members=members))
    # Consul: servers behind the one agent the URL names; only the agent is proxied.
    members = [SimpleNamespace(host="127.0.0.1", port=p) for p in (11, 12, 13, 14)]
    with FaultLink(SimpleNamespace(url="consul://127.0.0.1:14", members=members)) as link:
        assert len(link.proxies) == 1 and link.proxies[0].upstream == "127.0.0.1:14"
        assert link.url == f"consul://{link.proxies[0].address}"
