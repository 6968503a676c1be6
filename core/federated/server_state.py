"""What a federation's server keeps after every round, so that a restarted server can continue at the next one.

The state of round ``k`` is everything the rounds after it depend on:

- the global model after round ``k`` (what round ``k + 1`` sends);
- the strategy's own memory: FedAdam's and FedYogi's moments, FedAvgM's momentum, the adaptive clipping
  wrapper's current norm (Flower's strategies keep no other state between rounds; each one takes the current
  model from the arrays it is given);
- the ledger of Flower's privacy accountant, so the epsilon spent goes on from where it was, not from zero;
- the best round so far, with its evaluation, so the run's best round and statistics stay right.

It is one ``torch.save`` file of tensors and plain values (read back with ``weights_only``: never code), kept as
the server run's ``server_state`` artifact. :class:`ContinuedRounds` lets Flower's ``Strategy.start`` (which always
counts from round 1) run rounds ``k + 1`` onwards under their real numbers.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from core.federated.settings import FederationConfig
from core.federated.strategies import Aggregation
from core.persistence import Database
from core.persistence.artifacts import list_artifacts
from core.persistence.federation_records import flower_run_ids
from core.persistence.resumes import ResumeRefused, resumable_server_run

FORMAT = 1
# The attributes Flower's strategies and DP wrappers change between rounds (flwr 1.42: fedopt.py, fedadam.py,
# fedyogi.py, fedavgm.py, dp_adaptive_clipping.py); `current_arrays` is reset from the arrays of each round.
STRATEGY_ATTRIBUTES = ("m_t", "v_t", "momentum_vector", "clipping_norm")


@dataclass
class ServerState:
    """The server's state after round ``round_number`` (see the module docstring)."""

    round_number: int
    global_state: dict[str, torch.Tensor]
    strategy: list[dict[str, Any]] = field(default_factory=list)  # per layer, outermost (DP wrapper) first
    accountant: dict[str, Any] | None = None
    best: dict[str, Any] = field(default_factory=dict)  # BestRound.state_dict()

    def to_bytes(self) -> bytes:
        """The file kept with the run."""
        buffer = io.BytesIO()
        document = {
            "format": FORMAT,
            "round_number": self.round_number,
            "global_state": self.global_state,
            "strategy": _to_tensors(self.strategy),
            "accountant": self.accountant,
            "best": self.best,
        }
        torch.save(document, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, content: bytes) -> ServerState:
        """Read a state written by :meth:`to_bytes` (tensors and plain values only).

        Raises
        ------
        ValueError
            If it is not such a state.
        """
        document = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("not a PneumoFL server state of this version")
        return cls(
            round_number=int(document["round_number"]),
            global_state=dict(document["global_state"]),
            strategy=_to_numpy(document["strategy"]),
            accountant=document["accountant"],
            best=document["best"],
        )


def _layers(aggregation: Aggregation) -> Iterator[Strategy]:
    """The strategy and the ones it wraps (Flower's DP wrappers hold theirs as ``.strategy``)."""
    layer: Any = aggregation.strategy
    while isinstance(layer, Strategy):
        yield layer
        layer = getattr(layer, "strategy", None)


def capture(
    aggregation: Aggregation, round_number: int, global_state: dict[str, torch.Tensor], best: dict[str, Any]
) -> ServerState:
    """The state after round ``round_number`` whose aggregated model is ``global_state``."""
    layers = [
        {name: getattr(layer, name) for name in STRATEGY_ATTRIBUTES if getattr(layer, name, None) is not None}
        for layer in _layers(aggregation)
    ]
    accountant = aggregation.accountant.state_dict() if aggregation.accountant is not None else None
    return ServerState(round_number, dict(global_state), layers, accountant, best)


def restore(aggregation: Aggregation, state: ServerState) -> None:
    """Put the strategy's memory and the accountant's ledger back as they were after ``state``'s round.

    Raises
    ------
    ValueError
        If the strategy is not the one the state was captured from (another plan).
    """
    layers = list(_layers(aggregation))
    if len(layers) != len(state.strategy):
        raise ValueError("the federation's strategy differs from the one that was interrupted")
    for layer, saved in zip(layers, state.strategy):
        for name, value in saved.items():
            if not hasattr(layer, name):
                raise ValueError(f"{type(layer).__name__} has no {name}: the strategy differs from the interrupted one")
            setattr(layer, name, value)
    if (state.accountant is None) != (aggregation.accountant is None):
        raise ValueError("differential privacy is on in one of the interrupted and the continued federation only")
    if aggregation.accountant is not None:
        aggregation.accountant.load_state_dict(state.accountant)


class ContinuedRounds(Strategy):
    """Runs ``strategy``'s rounds after round ``done``: Flower's round ``i`` is round ``done + i`` everywhere."""

    def __init__(self, strategy: Strategy, done: int) -> None:
        super().__init__()
        self.strategy, self.done = strategy, done

    def summary(self) -> None:
        """Flower's start-up log line about the strategy."""
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """As the wrapped strategy, at the real round number."""
        return self.strategy.configure_train(server_round + self.done, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """As the wrapped strategy, at the real round number."""
        return self.strategy.aggregate_train(server_round + self.done, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """As the wrapped strategy, at the real round number."""
        return self.strategy.configure_evaluate(server_round + self.done, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """As the wrapped strategy, at the real round number."""
        return self.strategy.aggregate_evaluate(server_round + self.done, replies)

    def evaluate_fn(
        self, evaluate: Callable[[int, ArrayRecord], MetricRecord | None]
    ) -> Callable[[int, ArrayRecord], MetricRecord | None]:
        """``evaluate`` at the real round numbers; Flower's evaluation "before round 1" is skipped (it was done)."""

        def continued(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            return None if server_round == 0 else evaluate(server_round + self.done, arrays)

        return continued


def _to_tensors(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):  # 0-d arithmetic gives numpy scalars (BatchNorm's counters)
        return torch.from_numpy(np.array(value))  # a copy, 0-d kept 0-d (ascontiguousarray would make it 1-d)
    if isinstance(value, dict):
        return {k: _to_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_tensors(v) for v in value]
    return value


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_numpy(v) for v in value]
    return value


@dataclass(frozen=True)
class FederationToResume:
    """A server run that can continue: its plan (naming the Flower runs it continues) and evaluation data."""

    run_id: int
    plan: FederationConfig
    eval_data: str


def federation_to_resume(db: Database, run_id: int) -> FederationToResume:
    """Check that server run ``run_id`` can continue, and what it continues with.

    Raises
    ------
    core.errors.RunNotFoundError, core.persistence.resumes.ResumeRefused
        Saying why it cannot: not a server run, completed, still running, or no state kept.
    """
    with db.begin() as session:
        run = resumable_server_run(session, run_id, None)
        if "server_state" not in {a.kind for a in list_artifacts(session, run_id)}:
            raise ResumeRefused(
                f"Federation run {run_id} kept no state to continue from: it stopped before its first round ended, "
                "or was recorded by an older PneumoFL. Start a new federation instead."
            )
        continues = ",".join(str(i) for i in flower_run_ids(session, run_id))
    plan = FederationConfig.from_dict(run.config).with_changes(continues=continues).validate()
    return FederationToResume(run_id, plan, str(run.config.get("eval_data") or ""))
