"""The broadcast hub: one websockets server in the caller's asyncio loop (qasync in the desktop, plain in the CLI).

- Viewers (``/``) authenticate with the installation token (``Authorization: Bearer`` or ``?token=``), are
  read-only, and get a replay of a run followed by its live events with per-run sequence numbers.
- Producers (``/producer``, loopback peers only, ``X-PneumoFL-Secret`` header) push events from other processes
  (the Flower apps); they are re-broadcast like local ones.

A run's events are encoded once into the run's history; every viewer only holds a cursor into it and has its own
sender task, which sends everything past its cursor in one frame per ``batch_window`` (frames are shared between
viewers at the same position). Replay and live are therefore the same read of the same history: no gap, no
duplicate. A slow viewer never slows training or the other viewers: once it lags more than ``max_queue`` events while its
socket is full, it is sent only the low-rate events (it is told how many batch-level samples it lost), and a viewer that lags past
``max_lag`` is disconnected with a reason. Memory does not grow with viewers or their lag. Ingest costs the
producer thread one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from core.broadcast.protocol import (
    HIGH_RATE_TYPES,
    PROTOCOL_VERSION,
    ProtocolError,
    Subscribe,
    dumps,
    envelope,
    events_message,
    parse_viewer_message,
)
from core.broadcast.tokens import tokens_match
from core.broadcast.web import WebDashboard, default_web_root, same_origin
from core.events import Event, TrainingEnd, TrainingStart, event_from_json
from core.sinks import EventSink

log = logging.getLogger(__name__)
PRODUCER_PATH = "/producer"
SECRET_HEADER = "X-PneumoFL-Secret"
REPLAY_CHUNK = 500


@dataclass
class RunChannel:
    """One run's history (``(type, envelope)`` pairs, the oldest dropped past ``max_history``) and its viewers."""

    run_id: int
    max_history: int
    experiment_name: str = ""
    status: str = "in_progress"
    first_seq: int = 1  # sequence number of history[0]
    history: list[tuple[str, str]] = field(default_factory=list)
    subscribers: set[Viewer] = field(default_factory=set)

    @property
    def next_seq(self) -> int:
        """Sequence number the next event will get."""
        return self.first_seq + len(self.history)

    def append(self, kind: str, text: str) -> None:
        """Add an envelope; trim the oldest in blocks so trimming stays amortised O(1)."""
        self.history.append((kind, text))
        excess = len(self.history) - self.max_history
        if excess > max(1, self.max_history // 10):
            del self.history[:excess]
            self.first_seq += excess

    def entries(self, start: int, end: int) -> list[tuple[str, str]]:
        """Envelopes with ``start <= seq < end`` (both within the history)."""
        return self.history[start - self.first_seq : end - self.first_seq]

    def summary(self) -> dict[str, Any]:
        """The run as listed in ``hello``."""
        return {
            "run_id": self.run_id,
            "experiment_name": self.experiment_name,
            "status": self.status,
            "first_seq": self.first_seq,
            "last_seq": self.next_seq - 1,
        }


class Viewer:
    """One connected viewer: pending control messages, the run it follows and its cursor in that run."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.control: deque[str] = deque()
        self.wake = asyncio.Event()
        self.channel: RunChannel | None = None
        self.cursor = 1  # next sequence number to send
        self.generation = 0  # bumped on every (re)subscription, so a send in flight cannot move a new cursor
        self.wants_current = False
        self.bad_messages = 0
        self.dropped = 0
        self.closing = False
        self.congested = False  # its last frame waited on a full socket: the viewer, not a burst, is behind

    def say(self, message: dict[str, Any]) -> None:
        """Queue a control message and wake the sender."""
        self.control.append(dumps(message))
        self.wake.set()


class BroadcastHub:
    """Serves viewers and producers from the running asyncio loop.

    Parameters
    ----------
    host, port
        Where to listen (127.0.0.1 unless told otherwise; port 0 picks a free one, see :attr:`port`).
    token
        The viewer token, or a callable returning the current one (so a rotation takes effect at once).
    ssl_context
        Serve ``wss://`` with this context (see :func:`server_ssl_context`).
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
    db_url
        Serve the browser dashboard of this database's runs at ``/`` (see :mod:`core.broadcast.web`).
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
        self.host, self.port = host, port
        self._token = token
        self.ssl_context = ssl_context
        self.producer_secret = producer_secret
        self.max_history, self.max_queue, self.max_lag = max_history, max_queue, max_lag
        self.batch_window = batch_window
        self._frames: dict[tuple[int, int, int, bool], tuple[str, int]] = {}  # shared between viewers
        self.max_message = max_message
        self.channels: dict[int, RunChannel] = {}
        self.current: RunChannel | None = None
        self.viewers: set[Viewer] = set()
        self._failures: dict[str, tuple[int, float]] = {}
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.listeners: list[Callable[[Event], None]] = []  # in-process consumers (the console, the GUI)
        self.coalesced_events = 0  # batch-level samples dropped for slow viewers
        self.slow_disconnects = 0
        root = web_root or default_web_root()
        self.web: WebDashboard | None = None
        if db_url and root is not None:
            self.web = WebDashboard(
                root,
                db_url,
                lambda: self.token,
                lambda: {c.run_id: c.summary() for c in self.channels.values()},
                self._refuse,
                tls=ssl_context is not None,
            )

    # ------------------------------------------------------------------ lifecycle
    @property
    def token(self) -> str:
        """The token viewers must present now."""
        return self._token() if callable(self._token) else self._token

    def set_token(self, token: str | Callable[[], str]) -> None:
        """Use a new token from now on (existing viewers stay connected)."""
        self._token = token

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

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    async def start(self) -> None:
        """Bind and start serving in the running loop.

        Raises
        ------
        OSError
            If the address cannot be bound (in use, not local, no permission).
        """
        self._loop = asyncio.get_running_loop()
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._authorize,
            ssl=self.ssl_context,
            max_size=self.max_message,
            ping_interval=20,
            close_timeout=2,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("broadcast hub listening on %s", self.url)

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        if self.web is not None:
            self.web.close()

    def delivered(self) -> bool:
        """Whether every viewer has been sent everything of the run it follows (nothing waiting)."""
        return not any(v.control or (v.channel is not None and v.cursor < v.channel.next_seq) for v in self.viewers)

    # ------------------------------------------------------------------ ingest
    def publish_threadsafe(self, event: Event) -> None:
        """Publish from any thread (the training thread); returns at once."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self.publish, event)

    def publish(self, event: Event) -> None:
        """Record ``event`` in its run's history and queue it for that run's viewers (loop thread only)."""
        run_id = event.run_id or 0
        channel = self.channels.get(run_id)
        if channel is None:
            channel = self.channels[run_id] = RunChannel(run_id, self.max_history)
            self.current = channel
        if isinstance(event, TrainingStart):
            channel.experiment_name, channel.status = event.experiment_name, "in_progress"
            self.current = channel
        elif isinstance(event, TrainingEnd):
            channel.status = event.status
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("hub listener failed on %s", event.TYPE)
        seq = channel.next_seq
        channel.append(event.TYPE, envelope(event, seq))
        for viewer in list(channel.subscribers):
            if not viewer.wake.is_set():
                viewer.wake.set()
            if seq - viewer.cursor > self.max_lag and not viewer.closing:
                self._disconnect_slow(viewer)
        if self.current is channel:
            # Viewers following "current" move to a new run; their cursor starts at its first event.
            for viewer in [v for v in self.viewers if v.wants_current and v.channel is not channel]:
                self._detach(viewer)
                self._attach(viewer, channel, 1)

    def _disconnect_slow(self, viewer: Viewer) -> None:
        viewer.closing = True
        self.slow_disconnects += 1
        reason = f"viewer too slow: more than {self.max_lag} events behind"
        asyncio.get_running_loop().create_task(self._close(viewer, 1013, reason))

    # ------------------------------------------------------------------ connections
    async def _authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        peer = str(connection.remote_address[0]) if connection.remote_address else ""
        if parts.path == PRODUCER_PATH:
            if not _is_loopback(peer):
                return connection.respond(HTTPStatus.FORBIDDEN, "The producer path only accepts local processes.\n")
            if not self.producer_secret or not tokens_match(request.headers.get(SECRET_HEADER), self.producer_secret):
                return await self._refuse(connection, peer, "Missing or wrong producer secret.\n")
            return None
        if "websocket" not in request.headers.get("Upgrade", "").lower():  # a browser asking for the page
            if self.web is None:
                return connection.respond(HTTPStatus.NOT_FOUND, "This node serves live viewers only (pneumofl view).\n")
            return await self.web.respond(connection, request, peer)
        if parts.path not in ("/", "/viewer"):
            return connection.respond(HTTPStatus.NOT_FOUND, "Unknown path; viewers connect to /.\n")
        if not same_origin(request.headers):  # cross-site WebSocket hijacking: another site's page, our cookie
            return connection.respond(HTTPStatus.FORBIDDEN, "A page from another site may not open this socket.\n")
        if tokens_match(_presented_token(request.headers, parts.query), self.token) or (
            self.web is not None and self.web.signed_in(request.headers)
        ):
            self._failures.pop(peer, None)
            return None
        return await self._refuse(connection, peer, "Missing or wrong viewer token.\n")

    async def _refuse(self, connection: ServerConnection, peer: str, text: str) -> Response:
        """401, slowed down exponentially after repeated failures from one address (forgotten after 10 min)."""
        count, last = self._failures.get(peer, (0, 0.0))
        count = count + 1 if time.monotonic() - last < 600 else 1
        self._failures[peer] = (count, time.monotonic())
        if count > 3:
            await asyncio.sleep(min(0.25 * 2 ** (count - 4), 8.0))
        return connection.respond(HTTPStatus.UNAUTHORIZED, text)

    async def _handle(self, ws: ServerConnection) -> None:
        if urlsplit(ws.request.path).path == PRODUCER_PATH:
            await self._serve_producer(ws)
            return
        viewer = Viewer(ws)
        self.viewers.add(viewer)
        viewer.say(self._hello())
        sender = asyncio.get_running_loop().create_task(self._send_loop(viewer))
        try:
            async for raw in ws:
                await self._on_viewer_message(viewer, raw)
        except ConnectionClosed:
            pass
        finally:
            self._detach(viewer)
            self.viewers.discard(viewer)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    def _hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "runs": [c.summary() for c in self.channels.values()],
            "current_run": self.current.run_id if self.current else None,
        }

    async def _on_viewer_message(self, viewer: Viewer, raw: str | bytes) -> None:
        try:
            message = parse_viewer_message(raw)
        except ProtocolError as exc:
            viewer.bad_messages += 1
            if isinstance(raw, bytes):
                await self._close(viewer, 1003, "binary frames are not accepted")
            elif viewer.bad_messages >= 5:
                await self._close(viewer, 1008, f"too many invalid messages (last: {exc})")
            else:
                viewer.say({"type": "error", "message": str(exc)})
            return
        if message == "ping":
            viewer.say({"type": "pong"})
            return
        assert isinstance(message, Subscribe)
        channel = self.current if message.run_id is None else self.channels.get(message.run_id)
        self._detach(viewer)
        if channel is None and message.run_id is None:
            viewer.wants_current = True  # attached when the next run starts
            viewer.say({"type": "waiting", "message": "No run yet; waiting for the next one."})
        elif channel is None:
            known = sorted(self.channels)
            viewer.say({"type": "error", "message": f"unknown run {message.run_id}; runs: {known}"})
        else:
            viewer.wants_current = message.run_id is None
            self._attach(viewer, channel, message.since)

    def _attach(self, viewer: Viewer, channel: RunChannel, since: int) -> None:
        """Point the viewer's cursor into the run: its replay and its live events are one read of the history."""
        start = min(max(since, channel.first_seq), channel.next_seq)
        viewer.channel, viewer.cursor = channel, start
        viewer.generation += 1
        channel.subscribers.add(viewer)
        viewer.say(
            {"type": "subscribed", "run_id": channel.run_id, "from_seq": start, "replay_to": channel.next_seq - 1}
        )

    def _detach(self, viewer: Viewer) -> None:
        if viewer.channel is not None:
            viewer.channel.subscribers.discard(viewer)
            viewer.channel = None

    async def _send_loop(self, viewer: Viewer) -> None:
        ws = viewer.ws
        try:
            while True:
                await viewer.wake.wait()
                viewer.wake.clear()
                await asyncio.sleep(self.batch_window)  # gather a batch
                while viewer.control:
                    await ws.send(viewer.control.popleft())
                channel, generation = viewer.channel, viewer.generation
                while channel is not None and viewer.generation == generation and viewer.cursor < channel.next_seq:
                    if viewer.control:
                        break  # a new subscription or a pong goes first
                    if viewer.cursor < channel.first_seq:  # the history moved past this viewer
                        lost = channel.first_seq - viewer.cursor
                        viewer.cursor = channel.first_seq
                        self._count_dropped(viewer, lost)
                        await ws.send(dumps({"type": "coalesced", "run_id": channel.run_id, "dropped": lost}))
                    start = viewer.cursor
                    end = min(channel.next_seq, start + REPLAY_CHUNK)
                    lagging = viewer.congested and channel.next_seq - start > self.max_queue
                    frame, dropped = self._frame(channel, start, end, lagging)
                    if dropped:
                        self._count_dropped(viewer, dropped)
                        await ws.send(dumps({"type": "coalesced", "run_id": channel.run_id, "dropped": dropped}))
                    if frame:
                        sent_at = time.monotonic()
                        await ws.send(frame)
                        viewer.congested = time.monotonic() - sent_at > 2 * self.batch_window
                    if viewer.generation == generation:
                        viewer.cursor = end
                if viewer.control or (viewer.channel is not None and viewer.cursor < viewer.channel.next_seq):
                    viewer.wake.set()
        except ConnectionClosed:
            pass

    def _frame(self, channel: RunChannel, start: int, end: int, lagging: bool) -> tuple[str, int]:
        """The ``events`` frame for ``[start, end)`` (low-rate events only when lagging), shared between viewers."""
        key = (channel.run_id, start, end, lagging)
        cached = self._frames.get(key)
        if cached is None:
            entries = channel.entries(start, end)
            texts = [text for kind, text in entries if not (lagging and kind in HIGH_RATE_TYPES)]
            cached = (events_message(channel.run_id, texts) if texts else "", len(entries) - len(texts))
            if len(self._frames) > 64:  # enough for viewers moving in step; bounded memory
                self._frames.clear()
            self._frames[key] = cached
        return cached

    def _count_dropped(self, viewer: Viewer, count: int) -> None:
        viewer.dropped += count
        self.coalesced_events += count

    async def _close(self, viewer: Viewer, code: int, reason: str) -> None:
        viewer.closing = True
        log.info("closing viewer %s: %s", viewer.ws.remote_address, reason)
        with contextlib.suppress(Exception):
            await viewer.ws.close(code, reason)

    async def _serve_producer(self, ws: ServerConnection) -> None:
        bad = 0
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    await ws.close(1003, "producers send JSON text events")
                    return
                try:
                    event = event_from_json(raw)
                except ValueError as exc:
                    bad += 1
                    log.warning("producer sent an invalid event: %s", exc)
                    if bad >= 20:
                        await ws.close(1008, "too many invalid events")
                        return
                    continue
                self.publish(event)
        except ConnectionClosed:
            pass


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


def _presented_token(headers: Headers, query: str) -> str | None:
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    values = parse_qs(query).get("token")
    return values[0] if values else None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
