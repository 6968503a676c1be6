"""A recorded federation, from the server's run: its rounds, every site's reply per round, failures included.

What the app's federation view, the browser's federation page and ``pneumofl runs show`` draw for a finished
(or running) server run. :meth:`FederationHistory.events` rebuilds the live events from the rows, so a view draws
a recorded federation with the same code that draws a live one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.events import ClientUpdate, Event, RoundMetrics, RoundStart, TrainingStart
from core.persistence.federation_records import list_rounds
from core.persistence.models import metrics_table as m
from core.persistence.models import site_updates_table as u
from core.persistence.runs import RunRecord, get_run


@dataclass
class SiteReply:
    """One site's outcome in one round, as the server recorded it."""

    round_number: int
    site_id: str
    site_name: str
    failed: bool
    error: str | None
    num_examples: int
    time: float  # POSIX seconds at the server
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class FederationHistory:
    """The server run, its rounds (server metrics, start and end) and every site's reply."""

    run: RunRecord
    rounds: list[dict[str, Any]]
    replies: list[SiteReply]

    @property
    def sites(self) -> list[str]:
        """Every site that was sampled, by name."""
        return sorted({r.site_name for r in self.replies})

    def cross_site(self, metric: str = "global_val_auroc") -> dict[str, dict[int, float]]:
        """``{site: {round: value}}`` of how each round's global model did on each site's validation images."""
        table: dict[str, dict[int, float]] = defaultdict(dict)
        for reply in self.replies:
            if metric in reply.metrics:
                table[reply.site_name][reply.round_number] = reply.metrics[metric]
        return dict(table)

    def events(self) -> list[Event]:
        """The federation as the live events that recorded it, in order."""
        run_id = self.run.id
        events: list[Event] = [
            TrainingStart(
                run_id=run_id,
                experiment_name=self.run.experiment_name,
                training_mode="federated",
                role="server",
                total_epochs=int((self.run.config or {}).get("rounds", 0) or 0),
                timestamp=self.run.start_time.timestamp() if self.run.start_time else 0.0,
            )
        ]
        replies: dict[int, list[SiteReply]] = defaultdict(list)
        for reply in self.replies:
            replies[reply.round_number].append(reply)
        for row in self.rounds:
            number = int(row["round_number"])
            start, end = row.get("start_time"), row.get("end_time")
            if start is not None:
                events.append(RoundStart(run_id=run_id, round_number=number, timestamp=start.timestamp()))
            for reply in sorted(replies.pop(number, []), key=lambda r: r.time):
                events.append(_update(run_id, reply))
            events.append(
                RoundMetrics(
                    run_id=run_id,
                    round_number=number,
                    server_metrics=dict(row.get("server_metrics") or {}),
                    aggregated_client_metrics=dict(row.get("aggregated_site_metrics") or {}),
                    timestamp=end.timestamp() if end is not None else 0.0,
                )
            )
        for number in sorted(replies):  # a round that failed has replies but no row of its own
            events += [_update(run_id, reply) for reply in sorted(replies[number], key=lambda r: r.time)]
        return events


def load_federation(session: Session, run_id: int) -> FederationHistory:
    """The federation recorded by server run ``run_id`` (see :class:`FederationHistory`).

    Raises
    ------
    core.errors.RunNotFoundError
        If the run does not exist.
    """
    run = get_run(session, run_id)
    updates = session.execute(
        select(u.c.round_number, u.c.site_id, u.c.site_name, u.c.failed, u.c.error, u.c.num_examples, u.c.time)
        .where(u.c.run_id == run_id)
        .order_by(u.c.round_number, u.c.time)
    ).all()
    per_site: dict[tuple[int, str], dict[str, float]] = defaultdict(dict)
    rows = session.execute(
        select(m.c.round_number, m.c.site_id, m.c.metric_name, m.c.metric_value).where(
            m.c.run_id == run_id, m.c.context == "aggregated", m.c.site_id.is_not(None)
        )
    )
    for round_number, site_id, name, value in rows:
        if value is not None:
            per_site[(int(round_number or 0), str(site_id))][name] = float(value)
    replies = [
        SiteReply(
            round_number=int(r.round_number),
            site_id=r.site_id,
            site_name=r.site_name,
            failed=bool(r.failed),
            error=r.error,
            num_examples=int(r.num_examples or 0),
            time=r.time.timestamp(),
            metrics=per_site.get((int(r.round_number), r.site_id), {}),
        )
        for r in updates
    ]
    return FederationHistory(run=run, rounds=list_rounds(session, run_id), replies=replies)


def _update(run_id: int, reply: SiteReply) -> ClientUpdate:
    return ClientUpdate(
        run_id=run_id,
        round_number=reply.round_number,
        client_id=reply.site_id,
        client_name=reply.site_name,
        num_examples=reply.num_examples,
        metrics=dict(reply.metrics),
        failed=reply.failed,
        error=reply.error,
        timestamp=reply.time,
    )
