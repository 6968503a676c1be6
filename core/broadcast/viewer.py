"""The viewer client: follows one run on a hub, reconnecting with backoff and resuming from the last sequence."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from core.broadcast.protocol import dumps
from core.events import Event, event_from_dict

log = logging.getLogger(__name__)


class ViewerClient:
    """Connects to a hub, subscribes to a run and calls ``on_event(event, seq)`` for each event in order.

    Parameters
    ----------
    url
        ``ws://host:port`` or ``wss://host:port``.
    token
        The hub's viewer token (sent as ``Authorization: Bearer``).
    run
        A run id, or ``"current"`` to follow whatever the hub is training.
    on_event
        Called with each event and its per-run sequence number.
    on_state
        Called with a short human-readable connection state ("connected", "reconnecting in 2 s: ...").
    ssl_context
        For ``wss://`` with a private CA.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        run: int | str = "current",
        on_event: Callable[[Event, int], None] | None = None,
        on_state: Callable[[str], None] | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        ssl_context: Any = None,
        max_backoff: float = 10.0,
    ) -> None:
        self.url, self.token, self.run = url.rstrip("/"), token, run
        self.on_event = on_event or (lambda event, seq: None)
        self.on_state = on_state or (lambda state: None)
        self.on_message = on_message or (lambda message: None)
        self.ssl_context = ssl_context
        self.max_backoff = max_backoff
        self.run_id: int | None = None
        self.last_seq = 0
        self.state = "idle"
        self.hello: dict[str, Any] = {}
        self._stopped = False

    def _set_state(self, state: str) -> None:
        self.state = state
        self.on_state(state)

    def stop(self) -> None:
        """Stop after the current message; :meth:`run_forever` returns."""
        self._stopped = True

    async def run_forever(self) -> None:
        """Connect, follow the run, and reconnect with exponential backoff until :meth:`stop`.

        A refused token stops at once (retrying cannot help); the state says so.
        """
        backoff = 0.5
        while not self._stopped:
            try:
                self._set_state(f"connecting to {self.url}")
                async with connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    ssl=self.ssl_context,
                    open_timeout=10,
                    max_size=64 << 20,
                ) as ws:
                    backoff = 0.5
                    await self._follow(ws)
                    if self._stopped:
                        break
                    reason = "the hub closed the connection"
            except InvalidStatus as exc:
                code = exc.response.status_code
                if code in (401, 403):
                    self._set_state(f"refused by {self.url}: the token is wrong or was rotated (HTTP {code})")
                    return
                reason = f"HTTP {code}"
            except InvalidURI:
                self._set_state(f"{self.url} is not a WebSocket address (ws://host:port or wss://host:port)")
                return
            except (OSError, WebSocketException, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
            if self._stopped:
                break
            self._set_state(f"reconnecting in {backoff:.1f} s ({reason})")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
        self._set_state("disconnected")

    async def _follow(self, ws: Any) -> None:
        try:
            async for raw in ws:
                if self._stopped:
                    await ws.close()
                    return
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "hello":
                    self.hello = message
                    await ws.send(dumps(self._subscription()))
                    self._set_state(f"connected to {self.url}")
                elif kind == "events":
                    self._deliver(message)
                elif kind == "subscribed":
                    if message["run_id"] != self.run_id:  # a new run (following "current"): sequence restarts
                        self.run_id, self.last_seq = message["run_id"], message["from_seq"] - 1
                    self._set_state(f"connected to {self.url}, run {self.run_id}")
                self.on_message(message)
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.reason:
                self._set_state(f"closed by the hub: {exc.rcvd.reason}")
            raise

    def _subscription(self) -> dict[str, Any]:
        if self.run_id is not None and self.last_seq:
            return {"type": "subscribe", "run_id": self.run_id, "since": self.last_seq + 1}
        return {"type": "subscribe", "run_id": self.run}

    def _deliver(self, message: dict[str, Any]) -> None:
        run_id = message["run_id"]
        if run_id != self.run_id:
            return
        for envelope in message["events"]:
            seq = envelope["seq"]
            if seq <= self.last_seq:  # never deliver twice across a reconnect
                continue
            try:
                event = event_from_dict(envelope)
            except ValueError as exc:
                log.warning("skipping an event this viewer cannot read: %s", exc)
                self.last_seq = seq
                continue
            self.last_seq = seq
            self.on_event(event, seq)
