"""FedAvg weighted by ``num-examples``, announcing every site's result and every round as events."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from core.events import ClientUpdate, RoundMetrics, RoundStart
from core.sinks import EventSink

WEIGHT_KEY = "num-examples"


class RoundFailed(RuntimeError):
    """A round could not produce a global model (too few sites online or replying in time)."""


class RecordedFedAvg(FedAvg):
    """FedAvg whose hooks publish ``round_start``, one ``client_update`` per sampled site and ``round_metrics``.

    Parameters
    ----------
    sink
        Receives the events (the server's database, the hub).
    run_id
        The server's run id, stamped on every event.
    min_sites
        Sites that must be online for a round to start and must reply for it to count.
    round_timeout
        Seconds to wait for ``min_sites`` to come online before the round fails (Flower would wait forever).
    cancel
        Set to stop between rounds.
    """

    def __init__(
        self,
        sink: EventSink,
        run_id: int | None,
        *,
        min_sites: int,
        round_timeout: float,
        cancel: threading.Event | None = None,
        poll: float = 0.5,
    ) -> None:
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=0.0,  # the server evaluates centrally; sites report validation with their update
            min_train_nodes=min_sites,
            min_available_nodes=min_sites,
            weighted_by_key=WEIGHT_KEY,
        )
        self.sink, self.run_id = sink, run_id
        self.min_sites, self.round_timeout = min_sites, round_timeout
        self.cancel = cancel or threading.Event()
        self.poll = poll
        self.site_names: dict[int, str] = {}
        self.aggregated: dict[int, dict[str, float]] = {}
        self._sampled: dict[int, list[int]] = {}

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Wait (up to the round timeout) for enough sites, then send the global model to every online site."""
        deadline = time.monotonic() + self.round_timeout
        while len(online := list(grid.get_node_ids())) < self.min_sites:
            if self.cancel.is_set():
                raise RoundFailed("The run was stopped.")
            if time.monotonic() >= deadline:
                raise RoundFailed(
                    f"Round {server_round} timed out after {self.round_timeout:.0f} s: {len(online)} of the "
                    f"{self.min_sites} sites needed were online."
                )
            time.sleep(self.poll)
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._sampled[server_round] = [m.metadata.dst_node_id for m in messages]
        self.sink.handle(RoundStart(run_id=self.run_id, round_number=server_round, num_clients=len(messages)))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Publish each site's outcome, then average the weights of the sites that replied."""
        replies = list(replies)
        answered = {m.metadata.src_node_id for m in replies}
        valid = []
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                self._publish_failure(server_round, node, msg.error.reason)
                continue
            content = msg.content
            name = str(content["site"]["site-name"]) if "site" in content.config_records else str(node)
            self.site_names[node] = name
            metrics = next(iter(content.metric_records.values()), MetricRecord())
            self.sink.handle(
                ClientUpdate(
                    run_id=self.run_id,
                    round_number=server_round,
                    client_id=str(node),
                    client_name=name,
                    num_examples=int(metrics.get(WEIGHT_KEY, 0)),
                    metrics={k: float(v) for k, v in metrics.items() if k != WEIGHT_KEY},
                )
            )
            valid.append(content)
        for node in self._sampled.pop(server_round, []):
            if node not in answered:
                self._publish_failure(
                    server_round, node, f"no reply within the round timeout ({self.round_timeout:.0f} s)"
                )
        if len(valid) < self.min_sites:
            raise RoundFailed(
                f"Round {server_round} got results from {len(valid)} site(s); at least {self.min_sites} are needed. "
                "The sites' errors are listed against them."
            )
        self.aggregated[server_round] = weighted_metrics(valid)
        return aggregate_arrayrecords(valid, WEIGHT_KEY), MetricRecord(self.aggregated[server_round])

    def _publish_failure(self, server_round: int, node: int, reason: str) -> None:
        self.sink.handle(
            ClientUpdate(
                run_id=self.run_id,
                round_number=server_round,
                client_id=str(node),
                client_name=self.site_names.get(node, str(node)),
                num_examples=0,
                failed=True,
                error=reason,
            )
        )

    def round_metrics(self, server_round: int, server_metrics: dict[str, float]) -> None:
        """Publish the round's summary (called after the central evaluation)."""
        self.sink.handle(
            RoundMetrics(
                run_id=self.run_id,
                round_number=server_round,
                server_metrics=server_metrics,
                aggregated_client_metrics=self.aggregated.get(server_round, {}),
            )
        )


def weighted_metrics(contents: list) -> dict[str, float]:
    """Average every numeric metric over the sites that report it, weighted by their ``num-examples``.

    Unlike Flower's default, a metric missing at one site (a site whose validation split has one class has
    no AUROC) does not discard the round: it is averaged over the sites that have it.
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for content in contents:
        metrics = next(iter(content.metric_records.values()))
        weight = float(metrics.get(WEIGHT_KEY, 0))
        for name, value in metrics.items():
            if name == WEIGHT_KEY or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            sums[name] = sums.get(name, 0.0) + weight * float(value)
            weights[name] = weights.get(name, 0.0) + weight
    return {name: sums[name] / weights[name] for name in sums if weights[name] > 0}


EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]
