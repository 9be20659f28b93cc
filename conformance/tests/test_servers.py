"""The kit's store servers, against real containers: start, talk to the store, restart with the
data kept, pause, count requests, and clusters that survive losing their leader."""

from __future__ import annotations

import base64
import json
import socket
import struct
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from testcontainers.core.docker_client import DockerClient

from leadership_conformance import servers
from leadership_conformance.servers import FaultInjectionUnavailable, Member, StoreServer


def _docker_available() -> bool:
    try:
        client = DockerClient()
        client.client.ping()
        client.client.close()
    except Exception:
        return False
    return True


_DOCKER = _docker_available()
needs_docker = pytest.mark.skipif(not _DOCKER, reason="no Docker daemon reachable")


# --- minimal clients: stdlib only, so the kit's tests need no store client library --------------


def _http_json(url: str, method: str = "GET", body: Any = None, timeout: float = 5.0) -> Any:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _etcd_put(member: Member, key: str, value: str) -> None:
    _http_json(f"http://{member.address}/v3/kv/put", "POST", {"key": _b64(key), "value": _b64(value)})


def _etcd_get(member: Member, key: str) -> str | None:
    reply = _http_json(f"http://{member.address}/v3/kv/range", "POST", {"key": _b64(key)})
    kvs = reply.get("kvs") or []
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def _consul_put(member: Member, key: str, value: str) -> None:
    assert _http_json(f"http://{member.address}/v1/kv/{key}", "PUT", value.encode()) is True


def _consul_get(member: Member, key: str) -> str | None:
    try:
        reply = _http_json(f"http://{member.address}/v1/kv/{key}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return base64.b64decode(reply[0]["Value"]).decode()


class _ZooKeeper:
    """Just enough of the ZooKeeper wire protocol (jute) for create and getData."""

    def __init__(self, member: Member, timeout_ms: int = 4000) -> None:
        self._sock = socket.create_connection((member.host, member.port), timeout=5)
        self._xid = 0
        connect = struct.pack(">iqiq", 0, 0, timeout_ms, 0) + self._buffer(bytes(16)) + b"\x00"
        self._send(connect)
        self._recv()  # ConnectResponse

    @staticmethod
    def _buffer(data: bytes) -> bytes:
        return struct.pack(">i", len(data)) + data

    def _send(self, payload: bytes) -> None:
        self._sock.sendall(struct.pack(">i", len(payload)) + payload)

    def _recv(self) -> bytes:
        (length,) = struct.unpack(">i", self._exactly(4))
        return self._exactly(length)

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("ZooKeeper closed the connection")
            data += chunk
        return data

    def _call(self, op: int, body: bytes) -> tuple[int, bytes]:
        self._xid += 1
        self._send(struct.pack(">ii", self._xid, op) + body)
        reply = self._recv()
        _xid, _zxid, err = struct.unpack(">iqi", reply[:16])
        return err, reply[16:]

    def create(self, path: str, data: bytes) -> None:
        world_anyone = struct.pack(">i", 31) + self._buffer(b"world") + self._buffer(b"anyone")
        body = self._buffer(path.encode()) + self._buffer(data) + struct.pack(">i", 1) + world_anyone
        err, _ = self._call(1, body + struct.pack(">i", 0))
        assert err == 0, f"create {path}: error {err}"

    def get(self, path: str) -> bytes | None:
        err, reply = self._call(4, self._buffer(path.encode()) + b"\x00")
        if err == -101:  # NoNode
            return None
        assert err == 0, f"getData {path}: error {err}"
        (length,) = struct.unpack(">i", reply[:4])
        return reply[4 : 4 + length]

    def close(self) -> None:
        self._call(-11, b"")
        self._sock.close()


def _zk_put(member: Member, key: str, value: str) -> None:
    zk = _ZooKeeper(member)
    try:
        zk.create("/" + key, value.encode())
    finally:
        zk.close()


def _zk_get(member: Member, key: str) -> str | None:
    zk = _ZooKeeper(member)
    try:
        data = zk.get("/" + key)
    finally:
        zk.close()
    return None if data is None else data.decode()


_CLIENTS: dict[str, tuple[Callable[[Member, str, str], None], Callable[[Member, str], str | None]]] = {
    "etcd": (_etcd_put, _etcd_get),
    "zookeeper": (_zk_put, _zk_get),
    "consul": (_consul_put, _consul_get),
}

BACKENDS = [
    pytest.param("etcd", marks=pytest.mark.etcd),
    pytest.param("zookeeper", marks=pytest.mark.zookeeper),
    pytest.param("consul", marks=pytest.mark.consul),
]


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def _container_exists(name: str) -> bool:
    client = DockerClient()
    try:
        return bool(client.client.containers.list(all=True, filters={"name": name}))
    finally:
        client.client.close()


# --- tests -------------------------------------------------------------------------------------


def test_rejects_unknown_backend_and_network_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown backend 'redis'"):
        servers.server_for("redis")
    monkeypatch.setenv("LEADERSHIP_TEST_NETWORK", "overlay")
    with pytest.raises(ValueError, match="LEADERSHIP_TEST_NETWORK"):
        servers.start_etcd()


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[StoreServer]:
    if not _DOCKER:
        pytest.skip("no Docker daemon reachable")
    with servers.server_for(request.param) as s:
        yield s


def test_server_serves_restarts_with_data_and_pauses(server: StoreServer) -> None:
    if not server.can_inject_faults:
        pytest.skip("external server")
    put, get = _CLIENTS[server.scheme]
    member = server.members[0]
    assert server.url == f"{server.scheme}://{member.address}"
    assert server.leader_member() == 0

    before = server.request_count()
    assert before is not None
    for i in range(5):
        put(member, f"k-{uuid.uuid4().hex}", str(i))
    key = f"kept-{uuid.uuid4().hex}"
    put(member, key, "v")
    assert get(member, key) == "v"
    after = server.request_count()
    assert after is not None and after >= before + 7, (before, after)
    # The handle's own probes are not client requests.
    server.wait_serving()
    server.leader_member()
    assert server.request_count() == after

    server.restart()
    assert get(member, key) == "v", "restart() must keep the store's data"
    assert (server.request_count() or 0) >= after, "request_count() is monotonic across restarts"

    server.pause()
    try:
        with pytest.raises(servers.ServerStartError, match="did not serve within the deadline"):
            server.wait_serving(timeout=0.5)
        assert server.request_count() is not None
    finally:
        server.unpause()
    assert _wait(lambda: get(member, key) == "v", 10, "the store to answer after unpause")


@pytest.mark.etcd
def test_stop_removes_the_containers() -> None:
    if not _DOCKER:
        pytest.skip("no Docker daemon reachable")
    s = servers.start_etcd()
    assert s.members[0].container is not None
    name = s.members[0].container.get_wrapped_container().name
    assert _container_exists(name)
    s.stop()
    s.stop()  # idempotent
    assert not _container_exists(name)
    with pytest.raises(RuntimeError, match="stopped"):
        s.restart()


@pytest.mark.etcd
def test_a_port_taken_meanwhile_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    if not _DOCKER:
        pytest.skip("no Docker daemon reachable")
    if not servers._host_network():
        pytest.skip("with bridge networking Docker publishes the port itself")
    pick = servers._free_ports
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        calls: list[int] = []

        def first_pick_taken(count: int) -> list[int]:
            calls.append(count)
            ports = pick(count)
            return [taken, *ports[1:]] if len(calls) == 1 else ports

        monkeypatch.setattr(servers, "_free_ports", first_pick_taken)
        with servers.start_etcd() as s:
            assert len(calls) == 2
            assert s.members[0].port != taken
            _etcd_put(s.members[0], "k", "v")


@pytest.mark.etcd
def test_external_server_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    if not _DOCKER:
        pytest.skip("no Docker daemon reachable")
    with servers.start_etcd() as real:
        monkeypatch.setenv("LEADERSHIP_TEST_ETCD_URL", real.url)
        external = servers.server_for("etcd")
        assert external.url == real.url
        assert not external.can_inject_faults
        assert external.members[0].container is None
        for fault in (external.pause, external.unpause, external.restart, lambda: external.kill_member(0)):
            with pytest.raises(FaultInjectionUnavailable):
                fault()
        before = external.request_count()
        assert before is not None
        _etcd_put(external.members[0], "external", "yes")
        assert (external.request_count() or 0) > before
        assert external.leader_member() == 0
        external.stop()
        assert _container_exists(real.members[0].container.get_wrapped_container().name)  # type: ignore[union-attr]


def _survives_leader_kill(cluster: StoreServer) -> None:
    put, get = _CLIENTS[cluster.scheme]
    assert len(cluster.members) == 3
    assert len({m.port for m in cluster.members}) == 3
    assert cluster.url.count(",") == 2
    leader = _wait(lambda: (i := cluster.leader_member()) is not None and i + 1, 30, "a leader") - 1
    key = f"before-{uuid.uuid4().hex}"
    put(cluster.members[leader], key, "1")
    count = cluster.request_count()
    assert count is not None and count >= 1

    cluster.kill_member(leader)
    survivors = [m for m in cluster.members if m.index != leader]
    new_leader = _wait(lambda: (i := cluster.leader_member()) is not None and i + 1, 30, "a new leader") - 1
    assert new_leader != leader
    key2 = f"after-{uuid.uuid4().hex}"
    _wait(lambda: put(survivors[0], key2, "2") or True, 30, "a write to the surviving members")
    assert _wait(lambda: get(survivors[1], key) == "1", 10, "the old data on a survivor")
    assert (cluster.request_count() or 0) >= count, "request_count() is monotonic when a member dies"

    cluster.start_member(leader)
    back = cluster.members[leader]
    assert _wait(lambda: get(back, key2) == "2", 30, "the restarted member to catch up")
    assert cluster.leader_member() is not None


@pytest.mark.etcd
@pytest.mark.cluster
def test_etcd_cluster_survives_losing_its_leader() -> None:
    if not _DOCKER:
        pytest.skip("no Docker daemon reachable")
    with servers.start_etcd(members=3) as cluster:
        _survives_leader_kill(cluster)


@pytest.mark.zookeeper
@pytest.mark.cluster
def test_zookeeper_ensemble_survives_losing_its_leader() -> None:
    if not _DOCKER:
        pytest.skip("no Docker daemon reachable")
    with servers.start_zookeeper(members=3) as cluster:
        _survives_leader_kill(cluster)
