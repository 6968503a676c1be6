"""Records a federation around whichever Flower strategy aggregates it: rounds, every site's outcome, traffic, time.

:class:`RecordingStrategy` holds the strategy it records (as Flower's DP wrappers hold the strategy they protect)
and publishes ``round_start``, one ``client_update`` per sampled site and ``round_metrics``. It also makes rounds
end: a round waits at most the round timeout for enough sites (Flower's sampler would wait forever), and a site
that fails is reported once, by name, with the reason in words.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from core.data.fingerprint import checked_fingerprint
from core.events import ClientUpdate, RoundMetrics, RoundStart
from core.federated.settings import FINGERPRINT_KEY, WEIGHT_KEY
from core.federated.strategies import Aggregation
from core.federated.wire import ARRAYS_KEY, Layout, WireError, pack, pack_content, unpack_content
from core.sinks import EventSink

# Flower's error codes (flwr.common.constant.ErrorCode), said in words a site's administrator can act on.
log = logging.getLogger(__name__)
MAX_FINGERPRINT_BYTES = 64_000  # a real one is about 1 kB: a site cannot make the server keep more

_ERROR_WORDS = {
    3: "its task expired before it could be delivered",
    4: "its reply expired before the server collected it",
    5: "the site went offline during the round (its SuperNode stopped answering)",
    7: "refused the app: the site's data steward did not approve it (a site runs only apps its steward signed)",
    8: "the site's training process stopped responding (it crashed or was killed)",
}


class RoundFailed(RuntimeError):
    """A round could not produce a global model (too few sites online or replying in time)."""


class RecordingStrategy(Strategy):
    """Any Flower strategy, with every round and every site's outcome published as events.

    Parameters
    ----------
    aggregation
        The strategy that aggregates (see :func:`core.federated.strategies.build_aggregation`).
    sink
        Receives the events (the server's database, the hub).
    run_id
        The server's run id, stamped on every event.
    min_sites
        Sites that must be online for a round to start and must reply for it to count.
    round_timeout
        Seconds to wait for ``min_sites`` to come online before the round fails.
    site_names
        Known names by Flower node id (enrolled keys, local sites); replies add the names sites send.
    cancel
        Set to stop between rounds.
    wire_precision
        How the weights travel (see :mod:`core.federated.wire`): packed at ``fp32`` or ``fp16``.
    """

    def __init__(
        self,
        aggregation: Aggregation,
        sink: EventSink,
        run_id: int | None,
        *,
        min_sites: int,
        round_timeout: float,
        site_names: Callable[[], Mapping[int, str]] | None = None,
        cancel: threading.Event | None = None,
        poll: float = 0.5,
        wire_precision: str = "fp32",
    ) -> None:
        super().__init__()
        self.aggregation, self.inner = aggregation, aggregation.strategy
        self.sink, self.run_id = sink, run_id
        self.min_sites, self.round_timeout = min_sites, round_timeout
        self._known_names = site_names or dict
        self.cancel = cancel or threading.Event()
        self.poll = poll
        self.wire_precision = wire_precision
        self.current_round = 0  # the round being configured (what a site's late refusal is recorded against)
        self.site_names: dict[int, str] = {}
        # Each site's training data fingerprint as it last sent it (by site name; only sites whose policy allows)
        self.fingerprints: dict[str, dict] = {}
        self.aggregated: dict[int, dict[str, float]] = {}
        self.arrived: dict[str, float] = {}  # reply message id -> when it reached the server (see PromptGrid)
        self._sent: dict[int, list[Message]] = {}
        self._started: dict[int, float] = {}
        self._sent_bytes: dict[int, int] = {}

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Wait (up to the round timeout) for enough sites, then let the strategy address them."""
        self.current_round = server_round
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
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._pack(messages)
        self._sent[server_round] = messages
        self._started[server_round] = time.time()
        self.sink.handle(RoundStart(run_id=self.run_id, round_number=server_round, num_clients=len(messages)))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Publish each site's outcome once, then let the strategy aggregate the sites that replied."""
        sent = {m.metadata.message_id: m for m in self._sent.pop(server_round, [])}
        started = self._started.pop(server_round, time.time())
        self._sent_bytes.clear()
        valid: list[Message] = []
        answered: set[str] = set()
        for reply in replies:
            request = sent.get(reply.metadata.reply_to_message_id)
            node = request.metadata.dst_node_id if request is not None else reply.metadata.src_node_id
            answered.add(reply.metadata.reply_to_message_id)
            if reply.has_error():
                self._publish_failure(server_round, node, describe_error(reply.error.code, reply.error.reason))
                continue
            wire_bytes = content_bytes(reply.content)
            try:
                unpack_content(reply.content)  # strategies and DP wrappers see one array per tensor, as sent
            except WireError as exc:
                self._publish_failure(server_round, node, f"its reply could not be read: {exc}")
                continue
            self._publish_update(server_round, node, reply, request, started, wire_bytes)
            valid.append(reply)
        for message_id, request in sent.items():
            if message_id not in answered:
                self._publish_failure(
                    server_round,
                    request.metadata.dst_node_id,
                    f"no reply within the round timeout ({self.round_timeout:.0f} s)",
                )
        if len(valid) < self.min_sites:
            raise RoundFailed(
                f"Round {server_round} got results from {len(valid)} site(s); at least {self.min_sites} are needed. "
                "The sites' errors are listed against them."
            )
        self.aggregated[server_round] = dict(weighted_metrics([m.content for m in valid], WEIGHT_KEY))
        for reply in valid:
            _keep_only_aggregation_keys(reply, self.aggregation.weight_key)
        arrays, _ = self.inner.aggregate_train(server_round, valid)
        if arrays is None:
            raise RoundFailed(f"Round {server_round}: the {self.inner!r} strategy produced no model from the replies.")
        broken = [name for name, array in arrays.items() if not np.isfinite(array.numpy()).all()]
        if broken:
            raise RoundFailed(
                f"Round {server_round}: the aggregated model has non-finite weights ({', '.join(broken[:3])}): the "
                "strategy diverged. Lower the server learning rate (--server-lr) or use fedavg."
            )
        self.aggregation.released()
        return arrays, MetricRecord(self.aggregated[server_round])

    def _pack(self, messages: list[Message]) -> None:
        """Pack the weights of a round's messages, once for all of them (they share the global model)."""
        packed: dict[int, tuple[ArrayRecord, Layout]] = {}
        done: set[int] = set()
        for message in messages:
            content = message.content  # Flower's strategies give every message the same content object
            if ARRAYS_KEY not in content.array_records or id(content) in done:
                continue
            done.add(id(content))
            arrays = content[ARRAYS_KEY]
            if id(arrays) not in packed:
                packed[id(arrays)] = pack({k: v.numpy() for k, v in arrays.items()}, self.wire_precision)
            pack_content(content, *packed[id(arrays)])

    def _publish_update(
        self, server_round: int, node: int, reply: Message, request: Message | None, started: float, wire_bytes: int
    ) -> None:
        content = reply.content
        name = str(content["site"]["site-name"]) if "site" in content.config_records else self.name_of(node)
        self.site_names[node] = name
        self._keep_fingerprint(name, content)
        metrics = dict(next(iter(content.metric_records.values()), MetricRecord()))
        returned = self.arrived.get(reply.metadata.message_id, time.time()) - started
        train = float(metrics.get("train_seconds", 0.0))
        skip = (WEIGHT_KEY, self.aggregation.weight_key)
        numbers = {k: float(v) for k, v in metrics.items() if k not in skip and _is_number(v)}
        numbers |= {
            "bytes_to_site": float(self._request_bytes(request)) if request is not None else 0.0,
            "bytes_from_site": float(wire_bytes),
            "round_trip_seconds": returned,
            "wait_seconds": max(0.0, returned - train),  # process start, data loading, transfer, queueing
        }
        self.sink.handle(
            ClientUpdate(
                run_id=self.run_id,
                round_number=server_round,
                client_id=str(node),
                client_name=name,
                num_examples=int(metrics.get(WEIGHT_KEY, 0)),
                metrics={k: v for k, v in numbers.items() if math.isfinite(v)},
            )
        )

    def _keep_fingerprint(self, name: str, content: RecordDict) -> None:
        """Keep what a site says of its training data, rebuilt from its counts; ignore anything else."""
        about = content.config_records.get("site")
        text = about.get(FINGERPRINT_KEY) if about is not None else None
        if not isinstance(text, str) or len(text) > MAX_FINGERPRINT_BYTES:
            return
        try:
            fingerprint = checked_fingerprint(json.loads(text))
        except ValueError:
            fingerprint = None
        if fingerprint is None:
            log.warning("site %s sent a data fingerprint that is not one; it is left out", name)
            return
        self.fingerprints[name] = fingerprint

    def _request_bytes(self, request: Message) -> int:
        # Strategies usually send every site the same content object: measure it once per round, not per site.
        # Keys are ids of contents alive until the round ends; the cache is emptied when the next one starts.
        key = id(request.content)
        if key not in self._sent_bytes:
            self._sent_bytes[key] = content_bytes(request.content)
        return self._sent_bytes[key]

    def publish_failure(self, server_round: int, node: int, reason: str) -> None:
        """Record that ``node`` did not take part in ``server_round``, and why (never counted as a reply)."""
        self._publish_failure(server_round, node, reason)

    def _publish_failure(self, server_round: int, node: int, reason: str) -> None:
        self.sink.handle(
            ClientUpdate(
                run_id=self.run_id,
                round_number=server_round,
                client_id=str(node),
                client_name=self.name_of(node),
                num_examples=0,
                failed=True,
                error=reason,
            )
        )

    def name_of(self, node: int) -> str:
        """The site's name: as it last said, as enrolled, or its Flower node id."""
        return self.site_names.get(node) or self._known_names().get(node) or f"node {node}"

    def round_metrics(
        self, server_round: int, server_metrics: dict[str, float], privacy_spent: dict[str, float] | None = None
    ) -> dict[str, float]:
        """Publish the round's summary (after the central evaluation), with the privacy spent up to that round.

        ``privacy_spent`` is the accountant's figure taken when the round ended (the evaluation may finish while
        the next round runs); without it, the figure now.
        """
        metrics = dict(server_metrics)
        if server_round > 0:
            metrics |= (privacy_spent if privacy_spent is not None else self.aggregation.privacy_spent()) or {}
        self.sink.handle(
            RoundMetrics(
                run_id=self.run_id,
                round_number=server_round,
                server_metrics=metrics,
                aggregated_client_metrics=self.aggregated.get(server_round, {}),
            )
        )
        return metrics

    # ------------------------------------------------------------------ the rest is the strategy's
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sites evaluate inside their training reply: no separate evaluation message."""
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Nothing to aggregate (see :meth:`configure_evaluate`)."""
        return None

    def summary(self) -> None:
        """Flower's log summary of the strategy recorded."""
        self.inner.summary()

    def __repr__(self) -> str:
        """How Flower's log names the strategy."""
        return f"Recorded {self.inner!r}"


def weighted_metrics(contents: list[RecordDict], weight_key: str = WEIGHT_KEY) -> MetricRecord:
    """Average every numeric metric over the sites that report it, weighted by ``weight_key``.

    Unlike Flower's default, a metric missing at one site (a site whose validation split has one class has
    no AUROC) does not discard the round: it is averaged over the sites that have it.
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for content in contents:
        metrics = next(iter(content.metric_records.values()), MetricRecord())
        weight = float(metrics.get(weight_key, 0))
        for name, value in metrics.items():
            if name in (WEIGHT_KEY, weight_key) or not _is_number(value) or not math.isfinite(float(value)):
                continue
            sums[name] = sums.get(name, 0.0) + weight * float(value)
            weights[name] = weights.get(name, 0.0) + weight
    return MetricRecord({name: sums[name] / weights[name] for name in sums if weights[name] > 0})


def _keep_only_aggregation_keys(reply: Message, weight_key: str) -> None:
    """Leave the strategy only the numbers it aggregates with (the weight, DP's clipped bit).

    The sites' metrics were published and averaged above; Flower's strategies refuse replies whose metric
    names differ, which they do when a site's validation split has one class (no AUROC).
    """
    for name, record in list(reply.content.metric_records.items()):
        kept = {k: v for k, v in record.items() if k in (WEIGHT_KEY, weight_key, "norm_bit")}
        reply.content[name] = MetricRecord(kept)


def content_bytes(content: RecordDict) -> int:
    """The bytes a message's content takes on the wire (Flower sends every record as deflated objects)."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return sum(len(obj.deflate()) for obj in get_all_nested_objects(content).values())


def describe_error(code: int, reason: str) -> str:
    """A Flower error reply in words: what happened at the site, without Flower's internals."""
    if code in _ERROR_WORDS:
        return _ERROR_WORDS[code]
    # A ClientApp's exception arrives as "<class 'X'>:<'text'>"; our ClientApp's text is written for people.
    found = re.search(r":<'(.*)'>$", reason or "", flags=re.DOTALL)
    text = found.group(1) if found else (reason or "unknown error")
    text = text.split("Message: ", 1)[-1].strip()
    return text or "the site reported an error without a reason"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
