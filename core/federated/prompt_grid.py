"""Flower's grid, collecting the sites' replies as they arrive instead of every 3 seconds.

``HttpGrid.send_and_receive`` (the grid a ServerApp gets) sleeps 3 s between pulls, so every round ends up to
3 s after its last reply. :class:`PromptGrid` holds that grid and implements Flower's ``Grid`` interface with
the same push and pull calls, pulling every ``poll`` seconds, and notes when each reply reached the server (the
table of who returned what when). Flower's code is used as it is; only the waiting loop is ours.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flwr.app import Message
from flwr.serverapp import Grid

if TYPE_CHECKING:
    from core.federated.plan_query import PlanGate


class PromptGrid(Grid):
    """Delegates to ``grid``; :meth:`send_and_receive` pulls every ``poll`` seconds.

    Parameters
    ----------
    grid
        The grid Flower gave the ServerApp.
    poll
        Seconds between pulls while replies are outstanding (a loopback call each).
    on_reply
        Called with ``(reply message id, arrival time)`` for every reply pulled.
    """

    def __init__(self, grid: Grid, poll: float = 0.2, on_reply: Callable[[str, float], None] | None = None) -> None:
        self._grid, self.poll, self.on_reply = grid, poll, on_reply
        self.gate: PlanGate | None = None  # offers only the sites that approved the run's plan

    def set_run(self, run: Any) -> None:  # noqa: D102 - Flower's interface
        self._grid.set_run(run)

    @property
    def run(self) -> Any:  # noqa: D102
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # noqa: D102
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        """The online sites (with a plan gate: only those that approved the plan; new ones are asked)."""
        online = self._grid.get_node_ids()
        return online if self.gate is None else self.gate.filter(online)

    def get_nodes(self) -> Iterable[Any]:  # noqa: D102
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages``; return their replies once all arrived or ``timeout`` seconds passed."""
        waiting = set(self.push_messages(messages))
        deadline = time.monotonic() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        while waiting and (timeout is None or time.monotonic() < deadline):
            pulled = list(self.pull_messages(waiting))
            now = time.time()
            for reply in pulled:
                waiting.discard(reply.metadata.reply_to_message_id)
                if self.on_reply is not None:
                    self.on_reply(reply.metadata.message_id, now)
            replies += pulled
            if waiting:
                time.sleep(self.poll)
        return replies
