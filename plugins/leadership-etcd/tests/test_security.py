"""TLS and authentication against local etcd processes (needs the ``etcd`` binary; TLS also
``openssl``)."""

from __future__ import annotations

import asyncio
import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from aetcd import rpc  # type: ignore[import-untyped,unused-ignore]
from aetcd.utils import prefix_range_end  # type: ignore[import-untyped,unused-ignore]

from leadership.errors import AuthenticationError, PermanentStoreError, StoreUnavailableError
from leadership.url import StoreURL
from leadership_etcd import EtcdBackend

from .local_etcd import ETCD, LocalCluster, retrying

T = TypeVar("T")

pytestmark = pytest.mark.skipif(ETCD is None, reason="the etcd binary is not installed (apt-get install etcd-server)")


async def elect(url: str) -> int:
    b = EtcdBackend(StoreURL.parse(url))
    try:
        await retrying(b.open)
        s = await b.create_session(5)
        token = (await b.campaign(s, "secure/leader", "me")).token
        await s.close()
        return token
    finally:
        await b.close()


# -- TLS --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for ca in ("ca", "other"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
            "-days", "2", "-subj", f"/CN={ca}")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return d


@pytest.fixture(scope="module")
def tls_cluster(certs: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(1, tls=True, extra=[
        f"--cert-file={certs / 'server.pem'}", f"--key-file={certs / 'server.key'}",
        f"--trusted-ca-file={certs / 'ca.pem'}", "--client-cert-auth",
    ])
    yield cluster
    cluster.stop()


def test_mutual_tls(tls_cluster: LocalCluster, certs: Path) -> None:
    files = f"ca_cert={certs / 'ca.pem'}&client_cert={certs / 'client.pem'}&client_key={certs / 'client.key'}"
    endpoint = tls_cluster.members[0].endpoint
    assert asyncio.run(elect(f"etcd://{endpoint}/?{files}")) > 0
    # The certificate names localhost too: TLS checks the host name as given.
    assert asyncio.run(elect(f"etcd://localhost:{tls_cluster.members[0].client_port}/?{files}")) > 0


def test_tls_with_an_unknown_ca_is_permanent(tls_cluster: LocalCluster, certs: Path) -> None:
    files = f"ca_cert={certs / 'other.pem'}&client_cert={certs / 'client.pem'}&client_key={certs / 'client.key'}"
    with pytest.raises(PermanentStoreError, match="TLS"):
        asyncio.run(elect(f"etcd://{tls_cluster.members[0].endpoint}/?{files}&timeout=2"))


def test_plaintext_to_a_tls_server_is_transient(tls_cluster: LocalCluster) -> None:
    async def body() -> None:
        b = EtcdBackend(StoreURL.parse(f"etcd://{tls_cluster.members[0].endpoint}?timeout=1"))
        with pytest.raises(StoreUnavailableError):
            await b.open()
        await b.close()

    asyncio.run(body())


# -- authentication ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def auth_cluster() -> Iterator[LocalCluster]:
    # Tokens expire after 1 s idle, so the test sees the backend fetch a new one.
    cluster = LocalCluster(1, extra=["--auth-token-ttl=1"])

    async def setup() -> None:
        b = EtcdBackend(StoreURL.parse(cluster.url))
        await retrying(b.open)
        auth = b._client._member().auth
        prefix = b"leadership/"
        for request in [
            rpc.AuthUserAddRequest(name="root", password="rootpw"),
            rpc.AuthRoleAddRequest(name="root"),
            rpc.AuthUserGrantRoleRequest(user="root", role="root"),
            rpc.AuthUserAddRequest(name="app", password="apppw"),
            rpc.AuthUserAddRequest(name="nobody", password="nopw"),
            rpc.AuthRoleAddRequest(name="app"),
            rpc.AuthRoleGrantPermissionRequest(name="app", perm=rpc.Permission(
                permType=rpc.Permission.READWRITE, key=prefix, range_end=prefix_range_end(prefix))),
            rpc.AuthUserGrantRoleRequest(user="app", role="app"),
        ]:
            method = type(request).__name__.removeprefix("Auth").removesuffix("Request")
            await getattr(auth, method)(request, timeout=5)
        await auth.AuthEnable(rpc.AuthEnableRequest(), timeout=5)
        await b.close()

    asyncio.run(setup())
    yield cluster
    cluster.stop()


def test_credentials(auth_cluster: LocalCluster) -> None:
    endpoint = auth_cluster.members[0].endpoint
    assert asyncio.run(elect(f"etcd://app:apppw@{endpoint}")) > 0


@pytest.mark.parametrize(
    "userinfo, options, message",
    [
        ("app:wrong@", "", "authentication failed"),
        ("", "", "user name is empty"),
        ("nobody:nopw@", "", "permission denied"),
        ("app:apppw@", "?prefix=elsewhere", "permission denied"),
    ],
)
def test_rejected_credentials_are_permanent(
    auth_cluster: LocalCluster, userinfo: str, options: str, message: str
) -> None:
    with pytest.raises(AuthenticationError, match=message):
        asyncio.run(elect(f"etcd://{userinfo}{auth_cluster.members[0].endpoint}{options}"))


def test_expired_token_is_fetched_again(auth_cluster: LocalCluster) -> None:
    async def body() -> None:
        b = EtcdBackend(StoreURL.parse(f"etcd://app:apppw@{auth_cluster.members[0].endpoint}"))
        await retrying(b.open)
        await asyncio.sleep(2.5)  # the simple token expires
        with pytest.raises(StoreUnavailableError, match="invalid auth token"):
            await b.get_leader("k")
        assert await b.get_leader("k") is None
        await b.close()

    asyncio.run(body())


def test_expired_token_on_the_shared_watch_stream_is_fetched_again(auth_cluster: LocalCluster) -> None:
    """etcd checks the watch stream's token at each create: once it has expired, a new watch is
    refused as a transient error and goes to a new stream with a new token; the watch already
    on the old stream goes on."""

    async def body() -> None:
        b = EtcdBackend(StoreURL.parse(f"etcd://app:apppw@{auth_cluster.members[0].endpoint}"))
        await retrying(b.open)
        client = b._client
        start = (await retrying(lambda: client.unary("kv", "Range", rpc.RangeRequest(key=b"leadership/x")))).header
        first = client.watch(rpc.WatchCreateRequest(key=b"leadership/a", start_revision=start.revision + 1))
        async with first:
            await asyncio.sleep(2.5)  # the simple token expires
            with pytest.raises(StoreUnavailableError, match="re-authenticating"):
                async with client.watch(rpc.WatchCreateRequest(key=b"leadership/b")):
                    pass
            second = client.watch(rpc.WatchCreateRequest(key=b"leadership/b", start_revision=start.revision + 1))
            async with second:
                for key in (b"leadership/a", b"leadership/b"):
                    await retrying(functools.partial(client.unary, "kv", "Put", rpc.PutRequest(key=key, value=b"v")))
                for watch, key in ((first, b"leadership/a"), (second, b"leadership/b")):
                    events = (await asyncio.wait_for(watch.next(), 5)).events
                    assert [bytes(e.kv.key) for e in events] == [key]
        await b.close()

    asyncio.run(body())
