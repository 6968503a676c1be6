"""The server puts its plan to the sites before they train; only the sites that approve it are ever sampled.

One ``query`` message per site, with its own wait (``consent_timeout``, not a round's timeout): a site checks the
plan against its steward's policy and, within it, asks its user (see :mod:`core.federated.site_consent`). Before
round 1 the server waits for the sites online then; a site that comes online later (a new one, or one that
rejoined) is asked as soon as it is seen and takes part from the round after it approved, without holding any
round up. A site that declines, refuses the app (Flower's ``INVALID_FAB``) or does not answer is recorded against
the current round of the server's run with the reason, never as a reply.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from core.federated.recorder import RecordingStrategy, RoundFailed, describe_error
from core.federated.settings import PLAN_KEY

DEFAULT_CONSENT_TIMEOUT = 600.0


class PlanGate:
    """Which sites approved the run's plan; asks each site once, the moment it is first seen online.

    Parameters
    ----------
    grid
        Flower's grid (pushes and pulls go straight to it).
    strategy
        Records each site that did not approve, by name, against its current round.
    consent_timeout
        How long a site may take to decide.
    """

    def __init__(self, grid: Grid, strategy: RecordingStrategy, consent_timeout: float = DEFAULT_CONSENT_TIMEOUT):
        self.grid, self.strategy, self.consent_timeout = grid, strategy, consent_timeout
        self.approved: set[int] = set()
        self.said: dict[int, str] = {}  # why a site does not take part
        self._asked: dict[int, float] = {}  # node -> when
        self._pending: dict[str, int] = {}  # query message id -> node
        self._lock = threading.Lock()

    def filter(self, online: Iterable[int]) -> list[int]:
        """Ask the sites not asked yet, take in the answers that arrived, and return the approved online sites."""
        online = list(online)
        with self._lock:
            self._ask([node for node in online if node not in self._asked])
            self._collect()
            return [node for node in online if node in self.approved]

    def wait_first(self, min_sites: int, wait_online: float) -> None:
        """Before round 1: wait for ``min_sites`` sites online, ask them and wait for their answers.

        Raises
        ------
        RoundFailed
            If too few sites came online, or too few approved; naming each site that did not and why.
        """
        deadline = time.monotonic() + wait_online
        while len(online := sorted(self.grid.get_node_ids())) < min_sites:
            if self.strategy.cancel.is_set():
                raise RoundFailed("The run was stopped.")
            if time.monotonic() >= deadline:
                raise RoundFailed(  # the same sentence as a later round's (RecordingStrategy.configure_train)
                    f"Round 1 timed out after {wait_online:.0f} s: {len(online)} of the {min_sites} sites needed "
                    "were online."
                )
            time.sleep(self.strategy.poll)
        self.filter(online)
        # A site takes up to consent_timeout to decide; its answer then still has to travel.
        deadline = time.monotonic() + self.consent_timeout + 30.0
        while self._pending and time.monotonic() < deadline and not self.strategy.cancel.is_set():
            time.sleep(self.strategy.poll)
            self.filter(online)
        for node in online:
            if node not in self.approved and node not in self.said:
                self._refuse(node, f"did not answer the plan within {self.consent_timeout:.0f} s")
        if len(self.approved) < min_sites:
            reasons = "; ".join(
                f"site {self.strategy.name_of(node)} {self.said.get(node, 'did not answer').rstrip('.')}"
                for node in online
                if node not in self.approved
            )
            raise RoundFailed(
                f"{len(self.approved)} of the {len(online)} online sites approved the plan; at least {min_sites} "
                f"are needed. {reasons}."
            )

    def _ask(self, nodes: list[int]) -> None:
        if not nodes:
            return
        question = ConfigRecord({"consent-timeout": float(self.consent_timeout)})
        messages = [
            Message(content=RecordDict({PLAN_KEY: question}), message_type=MessageType.QUERY, dst_node_id=node)
            for node in nodes
        ]
        for message_id, node in zip(self.grid.push_messages(messages), nodes):
            self._pending[message_id] = node
            self._asked[node] = time.monotonic()

    def _collect(self) -> None:
        if not self._pending:
            return
        for reply in self.grid.pull_messages(list(self._pending)):
            node = self._pending.pop(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            if reply.has_error():
                self._refuse(node, describe_error(reply.error.code, reply.error.reason))
                continue
            answer = reply.content.config_records.get(PLAN_KEY) or ConfigRecord({})
            if answer.get("site-name"):
                self.strategy.site_names[node] = str(answer["site-name"])
            if bool(answer.get("approved", False)):
                self.approved.add(node)
            else:
                self._refuse(node, f"declined by site policy: {answer.get('reason') or 'no reason given'}")

    def _refuse(self, node: int, reason: str) -> None:
        self.said[node] = reason
        self.strategy.publish_failure(max(self.strategy.current_round, 1), node, reason)
