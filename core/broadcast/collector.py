"""Where a federation's Flower app processes push their live events: ingest only, on 127.0.0.1.

Each event goes straight to the listeners (the window's Qt bridge, the sharing hub's sink, the console); nothing
is kept here, because no viewer ever connects to a collector: replay is the public hub's job.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from starlette.routing import Router, WebSocketRoute

from core.broadcast.ingest import PRODUCER_PATH, Ingest
from core.broadcast.producer import HUB_SECRET_ENV, HUB_URL_ENV
from core.events import Event

if TYPE_CHECKING:
    from core.broadcast.serving import LoopServer

log = logging.getLogger(__name__)


class IngestServer:
    """``/producer`` on 127.0.0.1 (a free port) with a fresh secret, served from the running loop.

    ``listeners`` are called with every event in the loop's thread; one that fails does not stop the others.
    """

    def __init__(self, listeners: Sequence[Callable[[Event], None]] = ()) -> None:
        self.secret = secrets.token_urlsafe(32)
        self.listeners = list(listeners)
        self.ingest = Ingest(self.secret, self._deliver)
        self.app = Router([WebSocketRoute(PRODUCER_PATH, self.ingest.endpoint)])
        self._server: LoopServer | None = None

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT`` (once started)."""
        return f"ws://127.0.0.1:{self._server.port if self._server else 0}"

    @property
    def env(self) -> dict[str, str]:
        """The environment a producer process needs (see :func:`core.broadcast.producer.producer_from_env`)."""
        return {HUB_URL_ENV: self.url, HUB_SECRET_ENV: self.secret}

    async def start(self) -> None:
        """Start listening in the running loop."""
        from core.broadcast.serving import LoopServer  # uvicorn loads when a federation starts, not with the window

        self._server = LoopServer(self.app, "127.0.0.1", 0, ws_ping_interval=20, timeout_graceful_shutdown=2)
        await self._server.start()

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            await self._server.stop()

    def _deliver(self, event: Event) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("collector listener failed on %s", event.TYPE)


class EventCollector:
    """An :class:`IngestServer` in its own thread, for the desktop (whose Qt loop must not wait on producers).

    ``listeners`` are called with every event on the collector's thread; they must be thread-safe and quick
    (the desktop passes a Qt bridge, whose signal queues to the GUI thread).
    """

    def __init__(self, listeners: list[Callable[[Event], None]] | None = None) -> None:
        self.server = IngestServer(listeners or [])
        self.secret = self.server.secret
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment a producer process needs (see :func:`core.broadcast.producer.producer_from_env`)."""
        return self.server.env

    def start(self, timeout: float = 10.0) -> None:
        """Start listening (idempotent)."""
        if self._thread is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pneumofl-collector", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening and end the thread (idempotent)."""
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> EventCollector:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
