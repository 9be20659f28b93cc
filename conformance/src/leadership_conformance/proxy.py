"""A fault-injecting TCP link between one agent and the store, driven by the test.

:class:`FaultProxy` listens on a free loopback port and forwards every connection to one store
member. The test can then, at any moment:

- :meth:`~FaultProxy.partition`: black-hole both directions. Connections stay open and silent;
  bytes in flight are held back (the proxy stops reading, so TCP flow control pushes back on the
  sender exactly as lost packets and retransmissions would); new connections are accepted and
  held without reaching the store.
- :meth:`~FaultProxy.cut`: a one-way cut, client to store held, store to client still flowing.
- :meth:`~FaultProxy.heal`: everything flows again; held bytes are delivered in order (as TCP
  retransmission would after a partition), or, with ``reset=True``, every connection is closed
  first, as a middlebox that forgot the flows would.
- :meth:`~FaultProxy.reset`: close every connection now (the client sees a reset / EOF).
- :meth:`~FaultProxy.delay`: add latency to each direction of every connection.

:class:`FaultLink` is one proxy per member of a (possibly multi-member) store, with the store
URL rewritten to go through them: give each agent process a link of its own and the test can
cut that process off while the others still reach the store.

Pure Python on one asyncio loop in a daemon thread shared by every proxy of the test process;
no service, no privileges, loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["FaultLink", "FaultProxy"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_CHUNK = 65536


class _LoopThread:
    """One event loop in a daemon thread, shared by every open proxy of this process; it stops
    when the last proxy closes."""

    _lock = threading.Lock()
    _instance: _LoopThread | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.users = 0
        self.thread = threading.Thread(target=self.loop.run_forever, name="leadership-fault-proxy", daemon=True)
        self.thread.start()

    @classmethod
    def acquire(cls) -> _LoopThread:
        with cls._lock:
            if cls._instance is None:
                cls._instance = _LoopThread()
            cls._instance.users += 1
            return cls._instance

    def release(self) -> None:
        with _LoopThread._lock:
            self.users -= 1
            if self.users > 0:
                return
            if _LoopThread._instance is self:
                _LoopThread._instance = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 10.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class _Gate:
    """Whether one direction flows; waiters block while it is closed."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()


class _Pipe:
    """One proxied connection: two pumps, client->store and store->client."""

    def __init__(self, proxy: FaultProxy, client: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.proxy = proxy
        self.client_reader, self.client_writer = client
        self.store_writer: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    async def run(self) -> None:
        proxy = self.proxy
        try:
            # A new connection during a partition or a one-way cut is accepted and held: its
            # connect to the store waits until client->store flows again (a SYN that is lost).
            await proxy._up.open.wait()
            if self.closed:  # reset while held
                return
            try:
                upstream = await asyncio.open_connection(proxy.upstream_host, proxy.upstream_port)
                store_reader, self.store_writer = upstream
            except OSError as exc:
                log.debug("proxy %s: store %s refused: %s", proxy.address, proxy.upstream, exc)
                return
            self.tasks = [
                asyncio.create_task(self._pump(self.client_reader, self.store_writer, proxy._up)),
                asyncio.create_task(self._pump(store_reader, self.client_writer, proxy._down)),
            ]
            # Either side ending ends the connection (a half-close is not something the stores'
            # clients rely on, and holding one half open would hide a dead peer).
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: _Gate) -> None:
        try:
            while True:
                await gate.open.wait()  # closed: stop reading, so TCP pushes back on the sender
                data = await reader.read(_CHUNK)
                if not data:
                    return
                delay = self.proxy._delay
                if delay > 0:
                    # Latency, not throughput: a chunk read at t leaves at t + delay.
                    await asyncio.sleep(delay)
                await gate.open.wait()  # a partition that began meanwhile holds this chunk too
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            return

    def close(self) -> None:
        self.closed = True
        for task in self.tasks:
            task.cancel()
        for writer in (self.client_writer, self.store_writer):
            if writer is not None and not writer.is_closing():
                transport = writer.transport
                # abort(): an RST now, not a FIN after buffered bytes, like a dropped flow.
                with contextlib.suppress(Exception):
                    transport.abort()
        self.proxy._pipes.discard(self)


class FaultProxy:
    """A loopback TCP proxy to ``upstream_host:upstream_port`` whose link the test controls.

    Methods are called from any thread (not from the proxy's own loop). Use it as a context
    manager or call :meth:`close`.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = int(upstream_port)
        self._runner = _LoopThread.acquire()
        self._pipes: set[_Pipe] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._delay = 0.0
        self.state = "flowing"
        self.accepted = 0
        self._server: asyncio.Server | None = None
        try:
            self._up, self._down = self._runner.run(self._gates())
            self._server = self._runner.run(self._listen(listen_host))
        except BaseException:
            self._runner.release()
            raise
        sock = self._server.sockets[0].getsockname()
        self.host, self.port = str(sock[0]), int(sock[1])

    async def _gates(self) -> tuple[_Gate, _Gate]:
        return _Gate(), _Gate()  # asyncio.Event binds to the loop it is created on

    async def _listen(self, host: str) -> asyncio.Server:
        return await asyncio.start_server(self._accept, host, 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        pipe = _Pipe(self, (reader, writer))
        self._pipes.add(pipe)
        try:
            await pipe.run()
        finally:
            self._tasks.discard(task)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def upstream(self) -> str:
        return f"{self.upstream_host}:{self.upstream_port}"

    @property
    def connections(self) -> int:
        """Connections currently open through the proxy."""
        return len(self._pipes)

    def __repr__(self) -> str:
        return f"<FaultProxy {self.address} -> {self.upstream} {self.state}, {self.connections} conn>"

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults

    def _set(self, up: bool, down: bool, state: str) -> None:
        def apply() -> None:
            for gate, flowing in ((self._up, up), (self._down, down)):
                if flowing:
                    gate.open.set()
                else:
                    gate.open.clear()

        self._runner.loop.call_soon_threadsafe(apply)
        self.state = state
        log.info("proxy %s -> %s: %s", self.address, self.upstream, state)

    def partition(self) -> None:
        """Black-hole both directions: connections stay open, nothing passes, new ones are held."""
        self._set(False, False, "partitioned")

    def cut(self) -> None:
        """One-way cut: client to store held back, store to client still flowing."""
        self._set(False, True, "cut client->store")

    def heal(self, *, reset: bool = False) -> None:
        """Let everything flow again; with ``reset`` close every connection first."""
        if reset:
            self.reset()
        self._set(True, True, "flowing")

    def reset(self) -> None:
        """Close every connection through the proxy now; the listener stays."""

        async def close_all() -> int:
            pipes = list(self._pipes)
            for pipe in pipes:
                pipe.close()
            return len(pipes)

        n = self._runner.run(close_all())
        log.info("proxy %s -> %s: reset %d connection(s)", self.address, self.upstream, n)

    def delay(self, ms: float) -> None:
        """Add ``ms`` of latency to each direction (0 removes it)."""
        if ms < 0:
            raise ValueError(f"delay must be >= 0 ms, got {ms!r}")
        self._delay = ms / 1000.0
        log.info("proxy %s -> %s: delay %g ms each way", self.address, self.upstream, ms)

    def close(self) -> None:
        """Stop listening and close every connection."""
        server, self._server = self._server, None
        if server is None:
            return

        async def shutdown() -> None:
            server.close()
            pumps = [task for pipe in self._pipes for task in pipe.tasks]
            for pipe in list(self._pipes):
                pipe.close()
            tasks = [*self._tasks, *pumps]
            for task in tasks:
                task.cancel()
            # Every task of this proxy ends here: none is left pending when the loop stops.
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._runner.run(shutdown())
        self._runner.release()


def _netloc_pattern(address: str) -> re.Pattern[str]:
    # host:port as a whole member of the URL's host list, not a prefix of a longer port.
    return re.compile(rf"(?<=[/,@]){re.escape(address)}(?=[,/?]|$)")


class FaultLink:
    """One :class:`FaultProxy` per member named in a store's URL, and the URL through them.

    ``server`` is a kit server handle (``url`` and ``members`` with ``host``/``port``). Every
    fault method applies to all the link's proxies: the process using :attr:`url` is cut off
    from the whole store while others are not.
    """

    def __init__(self, server: Any) -> None:
        self.proxies: list[FaultProxy] = []
        url = str(server.url)
        try:
            for member in server.members:
                address = f"{member.host}:{member.port}"
                pattern = _netloc_pattern(address)
                n = len(pattern.findall(url))
                if n == 0:
                    continue  # a member clients do not reach directly (e.g. Consul servers behind an agent)
                if n > 1:
                    raise ValueError(f"member address {address} appears {n} times in the store URL {url!r}")
                proxy = FaultProxy(member.host, member.port)
                self.proxies.append(proxy)
                url = pattern.sub(proxy.address, url)
            if not self.proxies:
                raise ValueError(f"the store URL {url!r} names none of the members' addresses")
        except BaseException:
            self.close()
            raise
        self.url = url
        self.state = "flowing"
        self.faults: list[tuple[float, str]] = []

    def __repr__(self) -> str:
        return f"<FaultLink {self.url} {self.state}>"

    def __enter__(self) -> FaultLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _each(self, what: str, method: str, *args: Any, **kwargs: Any) -> None:
        self.faults.append((time.monotonic(), what))
        for proxy in self.proxies:
            getattr(proxy, method)(*args, **kwargs)

    def partition(self) -> None:
        self._each("partition", "partition")
        self.state = "partitioned"

    def cut(self) -> None:
        self._each("cut", "cut")
        self.state = "cut"

    def heal(self, *, reset: bool = False) -> None:
        self._each("heal+reset" if reset else "heal", "heal", reset=reset)
        self.state = "flowing"

    def reset(self) -> None:
        self._each("reset", "reset")

    def delay(self, ms: float) -> None:
        self._each(f"delay {ms:g}ms", "delay", ms)

    @property
    def connections(self) -> int:
        return sum(p.connections for p in self.proxies)

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.close()
