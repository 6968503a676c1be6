"""The producer side: a sink that pushes events from another process (a Flower app) to the local hub."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from core.broadcast.ingest import PRODUCER_PATH, SECRET_HEADER
from core.events import Event
from core.sinks import EventSink

log = logging.getLogger(__name__)
HUB_URL_ENV = "PNEUMOFL_HUB_URL"
HUB_SECRET_ENV = "PNEUMOFL_HUB_SECRET"


class ProducerSink(EventSink):
    """Sends events to a hub's ``/producer`` path from a background thread.

    ``handle`` only enqueues (never blocks training). If the hub is unreachable the thread retries with backoff;
    when the bounded queue is full, events are dropped and counted (the durable record is the database sink).
    """

    name = "live push to the hub"

    def __init__(self, url: str, secret: str, max_queue: int = 10_000) -> None:
        self.url = url.rstrip("/") + PRODUCER_PATH
        self.secret = secret
        self.dropped = 0
        self.sent = 0
        self._queue: queue.Queue[str | None] = queue.Queue(max_queue)
        self._thread = threading.Thread(target=self._run, name="pneumofl-producer", daemon=True)
        self._thread.start()

    def handle(self, event: Event) -> None:
        """Queue the event for the hub."""
        try:
            self._queue.put_nowait(event.to_json())
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (up to ``timeout`` seconds), then stop."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.2
        pending: str | None = None
        while True:
            try:
                with connect(self.url, additional_headers={SECRET_HEADER: self.secret}, open_timeout=5) as ws:
                    backoff = 0.2
                    while True:
                        if pending is None:
                            pending = self._queue.get()
                            if pending is None:
                                return
                        self._send(ws, pending)
                        pending = None
            except (OSError, WebSocketException, TimeoutError) as exc:
                log.info("hub at %s unreachable (%s); retrying in %.1fs", self.url, exc, backoff)
                if pending is None:  # while disconnected, a close request ends the thread instead of retrying
                    try:
                        pending = self._queue.get_nowait()
                    except queue.Empty:
                        pass
                    else:
                        if pending is None:
                            return
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _send(self, ws: ClientConnection, text: str) -> None:
        ws.send(text)
        self.sent += 1


def producer_from_env() -> ProducerSink | None:
    """A producer for the hub named in ``PNEUMOFL_HUB_URL``/``PNEUMOFL_HUB_SECRET``, or None when unset."""
    url, secret = os.environ.get(HUB_URL_ENV, ""), os.environ.get(HUB_SECRET_ENV, "")
    return ProducerSink(url, secret) if url and secret else None
