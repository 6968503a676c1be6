"""Central evaluation off a round's critical path: round r's global model is evaluated while round r+1 trains.

Flower calls the ServerApp's ``evaluate_fn`` between aggregating round r and sending round r+1, and sends nothing
until it returns. A site's SuperNode looks for its next message 3 s after its reply and then every 3 s, so a
server that takes longer than that before sending costs every site a further 3 s. The evaluation therefore runs
in one thread of its own, one round after another; what the round's record needs from the moment Flower moves on
(the strategy's memory and the privacy spent) is captured before it does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from core.events import Event
from core.sinks import EventSink

log = logging.getLogger(__name__)


class EvaluationQueue:
    """Runs the rounds' central evaluations in order, in one background thread.

    A failed evaluation is raised in Flower's thread at the next :meth:`submit` or at :meth:`drain`, so the
    federation fails with it instead of going on without its record.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pneumofl-central-evaluation")
        self._queued: list[Future[None]] = []

    def submit(self, evaluation: Callable[..., None], *args: Any) -> None:
        """Queue ``evaluation(*args)`` after those already queued; first raise any that failed."""
        self._raise_failures(wait=False)
        self._queued.append(self._pool.submit(evaluation, *args))

    def drain(self) -> None:
        """Wait for every queued evaluation; raise the first that failed."""
        self._raise_failures(wait=True)

    def close(self) -> None:
        """Wait for what is queued and stop the thread; failures are logged (the run has already failed)."""
        for future in self._queued:
            try:
                future.result()
            except Exception:  # the federation's own failure is what the user is told
                log.exception("a central evaluation failed while the federation was ending")
        self._queued.clear()
        self._pool.shutdown(wait=True)

    def _raise_failures(self, wait: bool) -> None:
        while self._queued and (wait or self._queued[0].done()):
            self._queued.pop(0).result()


class SerialSink(EventSink):
    """``sink`` called by one thread at a time: Flower's thread and the evaluation thread both publish."""

    def __init__(self, sink: EventSink) -> None:
        self.sink, self.name = sink, sink.name
        self._lock = threading.Lock()

    def handle(self, event: Event) -> None:
        """Pass ``event`` on once no other thread is handing one over."""
        with self._lock:
            self.sink.handle(event)

    def close(self) -> None:
        """Close the wrapped sink."""
        with self._lock:
            self.sink.close()
