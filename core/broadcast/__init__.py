"""Live broadcast: the hub (producer ingest, viewer fan-out, the browser dashboard), its sinks and the viewer client.

Protocol (version :data:`PROTOCOL_VERSION`), server to viewer, all JSON text frames:

- ``{"type": "hello", "protocol": 1, "runs": [{"run_id", "experiment_name", "status", "first_seq", "last_seq"}],
  "current_run": N | null}`` right after the handshake;
- ``{"type": "subscribed", "run_id": N, "from_seq": a, "replay_to": b}`` then ``{"type": "events", "run_id": N,
  "events": [envelope, ...]}`` messages: first the replay (seq ``a`` to ``b``), then live events, with no gap and
  no duplicate; each envelope is ``{"type", "version", "timestamp", "seq", "data"}``;
- ``{"type": "coalesced", "run_id": N, "dropped": k}`` when a slow viewer lost batch-level samples;
- ``{"type": "pong"}``, ``{"type": "error", "message": ...}``.

Viewer to server: ``{"type": "subscribe", "run_id": N | "current", "since": seq?}`` and ``{"type": "ping"}``.
"""

from core.broadcast.hub import BroadcastHub, HubSink
from core.broadcast.protocol import PROTOCOL_VERSION
from core.broadcast.tokens import load_or_create_token, rotate_token

__all__ = ["PROTOCOL_VERSION", "BroadcastHub", "HubSink", "load_or_create_token", "rotate_token"]
