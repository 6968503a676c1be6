"""A loopback hub in its own thread that collects the events other processes (Flower apps) push to it."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable

from core.broadcast.hub import BroadcastHub
from core.broadcast.producer import HUB_SECRET_ENV, HUB_URL_ENV
from core.events import Event


class EventCollector:
    """Runs a :class:`BroadcastHub` on 127.0.0.1 (a free port) with a fresh producer secret.

    ``listeners`` are called with every event on the collector's thread; they must be thread-safe and quick
    (the desktop passes a Qt bridge, whose signal queues to the GUI thread).
    """

    def __init__(self, listeners: list[Callable[[Event], None]] | None = None) -> None:
        self.secret = secrets.token_urlsafe(32)
        self.hub = BroadcastHub("127.0.0.1", 0, secrets.token_urlsafe(32), producer_secret=self.secret)
        self.hub.listeners.extend(listeners or [])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment a producer process needs (see :func:`core.broadcast.producer.producer_from_env`)."""
        return {HUB_URL_ENV: self.hub.url, HUB_SECRET_ENV: self.secret}

    def start(self, timeout: float = 10.0) -> None:
        """Start listening (idempotent)."""
        if self._thread is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pneumofl-collector", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.hub.start(), self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening and end the thread (idempotent)."""
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.hub.stop(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> EventCollector:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
