"""Producer ingest: events other local processes (the Flower apps) push to ``/producer``.

A producer is a loopback peer presenting the ``X-PneumoFL-Secret`` header; it sends one JSON event per text frame.
Both the public hub and the federation's collector take events this way and hand each one to a callable (the hub's
fan-out, or the collector's listeners); ingest itself keeps nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from core.broadcast.guard import FailureThrottle, Refusal, deny, is_loopback
from core.broadcast.tokens import tokens_match
from core.events import Event, event_from_json

if TYPE_CHECKING:  # producer processes import this module's names; they need no web framework
    from starlette.websockets import WebSocket

log = logging.getLogger(__name__)
PRODUCER_PATH = "/producer"
SECRET_HEADER = "X-PneumoFL-Secret"
MAX_BAD_EVENTS = 20


class Ingest:
    """Admits producers and turns their frames into events for ``publish``.

    Parameters
    ----------
    secret
        The producer secret (``None``: the path refuses everyone).
    publish
        Called with each valid event, in the serving loop's thread.
    throttle
        Shared with viewer sign-in, so guessing the secret is slowed down like guessing the token.
    """

    def __init__(
        self, secret: str | None, publish: Callable[[Event], None], throttle: FailureThrottle | None = None
    ) -> None:
        self.secret, self.publish = secret, publish
        self.throttle = throttle or FailureThrottle()
        self.invalid_events = 0

    async def check(self, peer: str, headers: Mapping[str, Any]) -> Refusal | None:
        """``None`` when ``peer`` may push events; else why not."""
        if not is_loopback(peer):
            return Refusal(403, "The producer path only accepts local processes.\n")
        if not self.secret or not tokens_match(headers.get(SECRET_HEADER), self.secret):
            await self.throttle.failed(peer)
            return Refusal(401, "Missing or wrong producer secret.\n")
        return None

    async def endpoint(self, ws: WebSocket) -> None:
        """The ``/producer`` WebSocket endpoint: admit the peer or refuse it, then read its events."""
        refusal = await self.check(ws.client.host if ws.client else "", ws.headers)
        if refusal is not None:
            await deny(ws, refusal)
            return
        await ws.accept()
        await self.serve(ws)

    async def serve(self, ws: WebSocket) -> None:
        """Read one accepted producer socket until it closes (after 20 invalid events, the hub closes it)."""
        bad = 0
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await ws.close(1003, "producers send JSON text events")
                return
            try:
                event = event_from_json(text)
            except ValueError as exc:
                bad += 1
                self.invalid_events += 1
                log.warning("producer sent an invalid event: %s", exc)
                if bad >= MAX_BAD_EVENTS:
                    await ws.close(1008, "too many invalid events")
                    return
                continue
            self.publish(event)
