"""The broadcast hub: one Starlette application on uvicorn, in the caller's asyncio loop (qasync in the desktop).

- Viewers (``/``) authenticate with the installation token (``Authorization: Bearer``, ``?token=`` or a browser's
  session cookie), are read-only, and get a replay of a run followed by its live events with per-run sequence
  numbers (:mod:`core.broadcast.fanout`; who may connect: :mod:`core.broadcast.guard`).
- Producers (``/producer``, loopback peers only, ``X-PneumoFL-Secret`` header) push events from other processes
  (the Flower apps); they are re-broadcast like local ones (:mod:`core.broadcast.ingest`).
- With a database, the same port serves the browser dashboard (:mod:`core.broadcast.web`).

Ingest from the training thread costs it one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.broadcast.dashboard import DashboardData, default_web_root
from core.broadcast.fanout import FanOut, RunChannel, Viewer
from core.broadcast.guard import ViewerGuard
from core.broadcast.ingest import PRODUCER_PATH, SECRET_HEADER, Ingest
from core.broadcast.web import hub_app
from core.events import Event
from core.sinks import EventSink

if TYPE_CHECKING:
    from core.broadcast.serving import LoopServer

__all__ = ["PRODUCER_PATH", "SECRET_HEADER", "BroadcastHub", "HubSink", "server_ssl_context"]
log = logging.getLogger(__name__)


class BroadcastHub:
    """Serves viewers, producers and (with a database) the browser dashboard from the running asyncio loop.

    Parameters
    ----------
    host, port
        Where to listen (127.0.0.1 unless told otherwise; port 0 picks a free one, see :attr:`port`).
    token
        The viewer token, or a callable returning the current one (so a rotation takes effect at once).
    ssl_context
        Serve ``wss://`` and ``https://`` with this context (see :func:`server_ssl_context`).
    producer_secret
        Enables ``/producer`` for loopback peers presenting this secret.
    max_history
        Envelopes kept per run for replay (the oldest go first).
    max_queue
        Lag (events) past which a viewer gets only low-rate events until it catches up.
    max_lag
        Lag past which a viewer is disconnected as too slow.
    batch_window
        Seconds to gather events into one frame (20-50 ms keeps latency low and frames few).
    max_message
        Largest frame a client may send (bytes); a larger one closes its socket with 1009.
    db_url
        Serve the browser dashboard of this database's runs at ``/``.
    web_root
        The dashboard's static files (default: those shipped with PneumoFL).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | Callable[[], str] = "",
        *,
        ssl_context: ssl.SSLContext | None = None,
        producer_secret: str | None = None,
        max_history: int = 200_000,
        max_queue: int = 5_000,
        max_lag: int = 50_000,
        batch_window: float = 0.025,
        max_message: int = 1 << 20,
        db_url: str | None = None,
        web_root: Path | None = None,
    ) -> None:
        self.host, self.ssl_context = host, ssl_context
        self.fanout = FanOut(max_history, max_queue, max_lag, batch_window)
        self.guard = ViewerGuard(token)
        self.ingest = Ingest(producer_secret, self.fanout.publish, self.guard.throttle)
        root = web_root or default_web_root()
        self.web = DashboardData(root, db_url, self.fanout.live_runs) if db_url and root is not None else None
        self.app = hub_app(self.fanout, self.guard, self.ingest, self.web, tls=ssl_context is not None)
        self._port, self._max_message = port, max_message
        self._server: LoopServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ the parts, under their old names
    @property
    def port(self) -> int:
        """The port listened on once started (useful with port 0), else the one asked for."""
        return self._server.port if self._server is not None else self._port

    @property
    def channels(self) -> dict[int, RunChannel]:
        """Each run's replay history, by run id."""
        return self.fanout.channels

    @property
    def viewers(self) -> set[Viewer]:
        """The connected viewers."""
        return self.fanout.viewers

    @property
    def listeners(self) -> list[Callable[[Event], None]]:
        """In-process consumers called with every event (the console, the GUI)."""
        return self.fanout.listeners

    @property
    def batch_window(self) -> float:
        """Seconds events are gathered into one frame."""
        return self.fanout.batch_window

    @property
    def coalesced_events(self) -> int:
        """Batch-level samples dropped for slow viewers."""
        return self.fanout.coalesced_events

    @property
    def slow_disconnects(self) -> int:
        """Viewers disconnected for lagging past ``max_lag``."""
        return self.fanout.slow_disconnects

    @property
    def token(self) -> str:
        """The token viewers must present now."""
        return self.guard.token

    def set_token(self, token: str | Callable[[], str]) -> None:
        """Use a new token from now on (existing viewers stay connected)."""
        self.guard.token_source = token

    @property
    def url(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS)."""
        scheme = "wss" if self.ssl_context else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def page_url(self) -> str | None:
        """``http(s)://host:port/``, the browser dashboard (None when this hub serves none)."""
        if self.web is None:
            return None
        return self.url.replace("ws", "http", 1) + "/"

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None and self._server.running

    async def start(self) -> None:
        """Bind and start serving in the running loop.

        Raises
        ------
        OSError
            If the address cannot be bound (in use, not local, no permission).
        """
        from core.broadcast.serving import LoopServer  # uvicorn loads when sharing starts, not with the window

        self._loop = asyncio.get_running_loop()
        server = LoopServer(
            self.app,
            self.host,
            self._port,
            self.ssl_context,
            ws_max_size=self._max_message,
            ws_ping_interval=20,
            timeout_graceful_shutdown=2,
        )
        await server.start()
        self._server = server
        log.info("broadcast hub listening on %s", self.url)

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is not None:
            await self._server.stop()
        if self.web is not None:
            self.web.close()

    def delivered(self) -> bool:
        """Whether every viewer has been sent everything of the run it follows (nothing waiting)."""
        return self.fanout.delivered()

    # ------------------------------------------------------------------ ingest
    def publish_threadsafe(self, event: Event) -> None:
        """Publish from any thread (the training thread); returns at once."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self.fanout.publish, event)

    def publish(self, event: Event) -> None:
        """Record ``event`` in its run's history and queue it for that run's viewers (loop thread only)."""
        self.fanout.publish(event)


class HubSink(EventSink):
    """Sends events to a hub running in another thread's loop (the training thread -> the GUI or CLI loop).

    ``hub`` may be a callable returning the hub of the moment (or ``None``), so sharing can start or stop while a
    run is already training.
    """

    name = "live broadcast"

    def __init__(self, hub: BroadcastHub | Callable[[], BroadcastHub | None]) -> None:
        self._hub = hub

    def handle(self, event: Event) -> None:
        """Hand the event to the hub's loop (dropped while nothing is shared)."""
        hub = self._hub() if callable(self._hub) else self._hub
        if hub is not None and hub.running:
            hub.publish_threadsafe(event)


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A TLS server context from PEM certificate and key files (for ``wss://``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context
