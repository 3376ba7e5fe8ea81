"""A loopback TCP proxy that stands in for an inter-region link.

Each direction gets its own one-way delay (bytes are released ``delay`` after
they were read, order preserved, so it adds latency without capping
throughput). ``partition()`` freezes the link: bytes already in flight and new
bytes are held, new connections are accepted but not connected upstream —
which is what a silent packet drop looks like to TCP peers — or, with
``reset=True``, every connection is closed and new ones are refused at once.
``heal()`` releases everything. The proxy runs its own asyncio loop in a
daemon thread, so it can be driven from synchronous test code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from drills.pg import free_port

__all__ = ["DelayProxy", "LinkStats", "proxies"]

_CHUNK = 65536


@dataclass
class LinkStats:
    """Counters for one proxy (both directions)."""

    connections: int = 0
    refused: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    open_connections: int = 0


@dataclass
class _Direction:
    delay_s: float
    queue: asyncio.Queue[tuple[float, bytes | None]] = field(default_factory=asyncio.Queue)


class DelayProxy:
    """``127.0.0.1:listen_port`` → ``target_host:target_port`` with per-direction delay.

    ``up`` is client→server (e.g. subscriber→publisher), ``down`` the reverse.
    """

    def __init__(
        self,
        target_port: int,
        *,
        target_host: str = "127.0.0.1",
        delay_up_ms: float = 0.0,
        delay_down_ms: float = 0.0,
        listen_port: int | None = None,
        name: str = "",
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_port = listen_port if listen_port is not None else free_port()
        self.name = name or f"proxy:{self.listen_port}->{target_port}"
        self._delay_up = delay_up_ms / 1000.0
        self._delay_down = delay_down_ms / 1000.0
        self.stats = LinkStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._healed: asyncio.Event | None = None
        self._reset_mode = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()

    # -- public, thread-safe API ---------------------------------------------------

    def start(self) -> DelayProxy:
        """Start listening (returns once the port is bound)."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self.name} did not start")
        return self

    def stop(self) -> None:
        """Close the listener and every connection; stop the loop thread."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        with contextlib.suppress(Exception):
            fut.result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def set_delay(self, *, up_ms: float | None = None, down_ms: float | None = None) -> None:
        """Change the one-way delays; applies to bytes read from now on."""
        if up_ms is not None:
            self._delay_up = up_ms / 1000.0
        if down_ms is not None:
            self._delay_down = down_ms / 1000.0

    def partition(self, *, reset: bool = False) -> None:
        """Cut the link: freeze (default) or reset every connection."""
        self._call(self._partition(reset))

    def heal(self) -> None:
        """Restore the link; frozen bytes and held connections proceed."""
        self._call(self._heal())

    @property
    def partitioned(self) -> bool:
        """True while the link is cut."""
        return self._healed is not None and not self._healed.is_set()

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- loop side ------------------------------------------------------------------

    def _call(self, coro: object) -> None:
        assert self._loop is not None, "proxy not started"
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
            self._ready.set()
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                pending = asyncio.all_tasks(loop)
                for t in pending:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _open(self) -> None:
        self._healed = asyncio.Event()
        self._healed.set()
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.listen_port, reuse_address=True
        )

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        if self._healed is not None:
            self._healed.set()

    async def _partition(self, reset: bool) -> None:
        assert self._healed is not None
        self._reset_mode = reset
        self._healed.clear()
        if reset:
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()

    async def _heal(self) -> None:
        assert self._healed is not None
        self._reset_mode = False
        self._healed.set()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            await self._serve(client_r, client_w)
        except (asyncio.CancelledError, ConnectionError, OSError):
            # Shutdown or a peer vanished: end quietly (asyncio would log a
            # cancelled connection handler as an error).
            client_w.transport.abort()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        assert self._healed is not None
        if self._reset_mode:
            self.stats.refused += 1
            client_w.transport.abort()
            return
        self._writers.add(client_w)
        # A frozen link holds the handshake too (like dropped SYNs being retried).
        await self._healed.wait()
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self.stats.refused += 1
            self._writers.discard(client_w)
            client_w.transport.abort()
            return
        self._writers.add(server_w)
        self.stats.connections += 1
        self.stats.open_connections += 1
        try:
            await asyncio.gather(
                self._pump(client_r, server_w, up=True),
                self._pump(server_r, client_w, up=False),
                return_exceptions=True,
            )
        finally:
            self.stats.open_connections -= 1
            for w in (client_w, server_w):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        done = object()

        async def read() -> None:
            try:
                while True:
                    data = await reader.read(_CHUNK)
                    if not data:
                        break
                    delay = self._delay_up if up else self._delay_down
                    await queue.put((time.monotonic() + delay, data))
            finally:
                await queue.put((0.0, done))  # type: ignore[arg-type]

        async def write() -> None:
            assert self._healed is not None
            while True:
                due, data = await queue.get()
                if data is done:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not self._healed.is_set():
                    await self._healed.wait()
                writer.write(data)
                await writer.drain()
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)

        reader_task = asyncio.ensure_future(read())
        try:
            await write()
        finally:
            reader_task.cancel()
            with contextlib.suppress(BaseException):
                await reader_task
            # One side finished: tear the whole connection down.
            writer.transport.abort()


@contextlib.contextmanager
def proxies(*specs: tuple[int, float, float]) -> Iterator[list[DelayProxy]]:
    """Start one proxy per ``(target_port, delay_up_ms, delay_down_ms)``; stop all on exit."""
    started: list[DelayProxy] = []
    try:
        for port, up, down in specs:
            started.append(DelayProxy(port, delay_up_ms=up, delay_down_ms=down).start())
        yield started
    finally:
        for p in started:
            with contextlib.suppress(Exception):
                p.stop()
