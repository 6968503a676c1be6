"""Fan-out: each run's replay history, the viewers following it, and back-pressure.

A run's events are encoded once into the run's history; every viewer only holds a cursor into it and has its own
sender task, which sends everything past its cursor in one frame per ``batch_window`` (frames are shared between
viewers at the same position). Replay and live are therefore the same read of the same history: no gap, no
duplicate. A slow viewer never slows training or the other viewers: once it lags more than ``max_queue`` events
while its socket is full, it is sent only the low-rate events (it is told how many batch-level samples it lost),
and a viewer that lags past ``max_lag`` is disconnected with a reason. Memory does not grow with viewers or lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

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
from core.events import Event, TrainingEnd, TrainingStart

log = logging.getLogger(__name__)
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

    def __init__(self, ws: WebSocket) -> None:
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
        self.sender: asyncio.Task[None] | None = None

    def say(self, message: dict[str, Any]) -> None:
        """Queue a control message and wake the sender."""
        self.control.append(dumps(message))
        self.wake.set()


class FanOut:
    """Every run's history and every viewer, in one asyncio loop (all methods run in that loop's thread).

    Parameters
    ----------
    max_history
        Envelopes kept per run for replay (the oldest go first).
    max_queue
        Lag (events) past which a congested viewer gets only low-rate events until it catches up.
    max_lag
        Lag past which a viewer is disconnected as too slow.
    batch_window
        Seconds to gather events into one frame (20-50 ms keeps latency low and frames few).
    """

    def __init__(self, max_history: int, max_queue: int, max_lag: int, batch_window: float) -> None:
        self.max_history, self.max_queue, self.max_lag = max_history, max_queue, max_lag
        self.batch_window = batch_window
        self.channels: dict[int, RunChannel] = {}
        self.current: RunChannel | None = None
        self.viewers: set[Viewer] = set()
        self.listeners: list[Callable[[Event], None]] = []  # in-process consumers (the console, the GUI)
        self.coalesced_events = 0  # batch-level samples dropped for slow viewers
        self.slow_disconnects = 0
        self._frames: dict[tuple[int, int, int, bool], tuple[str, int]] = {}  # shared between viewers

    def delivered(self) -> bool:
        """Whether every viewer has been sent everything of the run it follows (nothing waiting)."""
        return not any(v.control or (v.channel is not None and v.cursor < v.channel.next_seq) for v in self.viewers)

    def live_runs(self) -> dict[int, dict[str, Any]]:
        """``{run_id: summary}`` of the runs in memory (what the dashboard's snapshot overlaps with)."""
        return {c.run_id: c.summary() for c in self.channels.values()}

    # ------------------------------------------------------------------ publishing
    def publish(self, event: Event) -> None:
        """Record ``event`` in its run's history and wake that run's viewers."""
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
                viewer.closing = True
                self.slow_disconnects += 1
                reason = f"viewer too slow: more than {self.max_lag} events behind"
                asyncio.get_running_loop().create_task(self._close(viewer, 1013, reason))
        if self.current is channel:
            # Viewers following "current" move to a new run; their cursor starts at its first event.
            for viewer in [v for v in self.viewers if v.wants_current and v.channel is not channel]:
                self._detach(viewer)
                self._attach(viewer, channel, 1)

    # ------------------------------------------------------------------ one viewer
    async def serve(self, ws: WebSocket) -> None:
        """Serve one accepted viewer socket until it closes."""
        viewer = Viewer(ws)
        self.viewers.add(viewer)
        viewer.say(self._hello())
        sender = viewer.sender = asyncio.get_running_loop().create_task(self._send_loop(viewer))
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self._on_message(viewer, message.get("text", message.get("bytes", b"")))
        except (WebSocketDisconnect, RuntimeError):  # RuntimeError: the socket was closed from our side
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

    async def _on_message(self, viewer: Viewer, raw: str | bytes) -> None:
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
                    await ws.send_text(viewer.control.popleft())
                channel, generation = viewer.channel, viewer.generation
                while channel is not None and viewer.generation == generation and viewer.cursor < channel.next_seq:
                    if viewer.control:
                        break  # a new subscription or a pong goes first
                    if viewer.cursor < channel.first_seq:  # the history moved past this viewer
                        lost = channel.first_seq - viewer.cursor
                        viewer.cursor = channel.first_seq
                        self._count_dropped(viewer, lost)
                        await ws.send_text(dumps({"type": "coalesced", "run_id": channel.run_id, "dropped": lost}))
                    start = viewer.cursor
                    end = min(channel.next_seq, start + REPLAY_CHUNK)
                    lagging = viewer.congested and channel.next_seq - start > self.max_queue
                    frame, dropped = self._frame(channel, start, end, lagging)
                    if dropped:
                        self._count_dropped(viewer, dropped)
                        await ws.send_text(dumps({"type": "coalesced", "run_id": channel.run_id, "dropped": dropped}))
                    if frame:
                        sent_at = time.monotonic()
                        await ws.send_text(frame)  # waits while the socket's buffers are full
                        viewer.congested = time.monotonic() - sent_at > 2 * self.batch_window
                    if viewer.generation == generation:
                        viewer.cursor = end
                if viewer.control or (viewer.channel is not None and viewer.cursor < viewer.channel.next_seq):
                    viewer.wake.set()
        except (WebSocketDisconnect, RuntimeError, OSError):  # closed under us; the reader ends the viewer
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
        log.info("closing viewer %s: %s", viewer.ws.client, reason)
        if viewer.sender is not None:
            # A sender waiting on a full socket would make the close frame's wait the second one on that socket,
            # which uvicorn's websockets protocol refuses; the close then times out and drops the connection.
            viewer.sender.cancel()
        with contextlib.suppress(Exception):
            await viewer.ws.close(code, reason)
