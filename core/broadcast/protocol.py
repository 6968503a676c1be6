"""Wire messages of the broadcast protocol (see :mod:`core.broadcast`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.events import Event

PROTOCOL_VERSION = 1
MAX_VIEWER_MESSAGE = 4096  # viewers only ever send tiny control messages
HIGH_RATE_TYPES = frozenset({"batch_metrics", "gradient_stats", "lr_update"})


class ProtocolError(ValueError):
    """A viewer message that is not part of the protocol; the text says what was wrong."""


@dataclass(frozen=True)
class Subscribe:
    """A viewer's request for one run's replay and live events."""

    run_id: int | None  # None: the current run
    since: int = 1


def envelope(event: Event, seq: int) -> str:
    """The event's JSON envelope with its per-run sequence number."""
    payload = event.to_dict()
    payload["seq"] = seq
    return json.dumps(payload, separators=(",", ":"))


def dumps(message: dict[str, Any]) -> str:
    """Compact JSON for a control message."""
    return json.dumps(message, separators=(",", ":"))


def events_message(run_id: int, envelopes: list[str]) -> str:
    """Several envelopes (already JSON) in one ``events`` frame, without re-encoding them."""
    return f'{{"type":"events","run_id":{run_id},"events":[{",".join(envelopes)}]}}'


def parse_viewer_message(raw: str | bytes) -> Subscribe | str:
    """Parse a viewer frame: a :class:`Subscribe` or ``"ping"``.

    Raises
    ------
    ProtocolError
        For binary frames, bad JSON, unknown types or bad fields (viewers are read-only).
    """
    if isinstance(raw, bytes):
        raise ProtocolError("binary frames are not accepted; send JSON text")
    if len(raw) > MAX_VIEWER_MESSAGE:
        raise ProtocolError(f"message too large ({len(raw)} bytes; at most {MAX_VIEWER_MESSAGE})")
    try:
        message = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc.msg}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = message.get("type")
    if kind == "ping":
        return "ping"
    if kind != "subscribe":
        raise ProtocolError(f"unknown message type {kind!r}; viewers may only send 'subscribe' and 'ping'")
    run = message.get("run_id", "current")
    if run == "current":
        run_id = None
    elif isinstance(run, int) and not isinstance(run, bool) and run > 0:
        run_id = run
    else:
        raise ProtocolError(f"run_id must be a positive integer or 'current', not {run!r}")
    since = message.get("since", 1)
    if not isinstance(since, int) or isinstance(since, bool) or since < 1:
        raise ProtocolError(f"since must be a sequence number (1 or more), not {since!r}")
    return Subscribe(run_id=run_id, since=since)
