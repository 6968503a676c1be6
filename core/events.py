"""The one event schema: everything that happens in a training run is one of these.

Events are frozen dataclasses. Their JSON form is ``{"type", "version", "timestamp", "data"}``
where ``data`` holds every other field. Producers publish them to sinks (``core.sinks``) and never
know who listens.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA_VERSION = 1

MetricDict = dict[str, float]


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event: who (run, client), when (timestamp) and where in federation (round)."""

    TYPE: ClassVar[str] = "event"
    VERSION: ClassVar[int] = SCHEMA_VERSION

    run_id: int | None = None
    timestamp: float = field(default_factory=time.time)
    client_id: str | None = None
    round_number: int | None = None

    def with_run(self, run_id: int | None) -> Event:
        """Return a copy stamped with ``run_id``."""
        return dataclasses.replace(self, run_id=run_id)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready envelope ``{"type", "version", "timestamp", "data"}``."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "timestamp"}
        return {"type": self.TYPE, "version": self.VERSION, "timestamp": self.timestamp, "data": data}

    def to_json(self) -> str:
        """Serialise to a compact JSON string."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=True)


@dataclass(frozen=True, kw_only=True)
class TrainingStart(Event):
    """A run began. ``config`` is the full run configuration as a plain dict."""

    TYPE: ClassVar[str] = "training_start"
    experiment_name: str
    training_mode: str = "centralized"
    role: str = "standalone"
    total_epochs: int = 0
    steps_per_epoch: int = 0
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class EpochEnd(Event):
    """Train and validation metrics of one completed epoch (both for the *same* epoch).

    ``metrics`` keys are ``{split}_{metric}``: e.g. ``train_loss``, ``val_recall``, ``val_cm_tp``.
    ``epoch`` counts from 1. ``curves`` holds the epoch's validation ROC for live display:
    ``{"val_roc": {"fpr": [...], "tpr": [...]}}`` (not persisted per epoch; the final ROC is).
    """

    TYPE: ClassVar[str] = "epoch_end"
    epoch: int
    metrics: MetricDict
    curves: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class BatchMetrics(Event):
    """Training metrics over the window of batches since the previous sample."""

    TYPE: ClassVar[str] = "batch_metrics"
    epoch: int
    step: int
    metrics: MetricDict


@dataclass(frozen=True, kw_only=True)
class GradientStats(Event):
    """Gradient norms before clipping: the true global L2 norm and one norm per parameter tensor."""

    TYPE: ClassVar[str] = "gradient_stats"
    step: int
    global_norm: float
    layer_norms: MetricDict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class LrUpdate(Event):
    """The optimiser's learning rate changed (or a new epoch started)."""

    TYPE: ClassVar[str] = "lr_update"
    epoch: int
    step: int
    lr: float


@dataclass(frozen=True, kw_only=True)
class EarlyStopping(Event):
    """Early stopping fired after ``epoch``."""

    TYPE: ClassVar[str] = "early_stopping"
    epoch: int
    monitor: str
    best_value: float
    patience: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class RoundStart(Event):
    """A federated round started on the server."""

    TYPE: ClassVar[str] = "round_start"
    num_clients: int = 0


@dataclass(frozen=True, kw_only=True)
class ClientUpdate(Event):
    """One site's result in a federated round."""

    TYPE: ClassVar[str] = "client_update"
    num_examples: int
    client_name: str = ""  # the site's display name (client_id is Flower's node id)
    metrics: MetricDict = field(default_factory=dict)
    phase: str = "train"
    failed: bool = False
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class RoundMetrics(Event):
    """Aggregated results of a federated round (server evaluation and weighted client metrics)."""

    TYPE: ClassVar[str] = "round_metrics"
    server_metrics: MetricDict = field(default_factory=dict)
    aggregated_client_metrics: MetricDict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TrainingEnd(Event):
    """A run ended. ``status`` is completed, failed or cancelled.

    ``best_metrics`` are the best epoch's (or round's) ``val_*`` metrics. ``final_stats`` is the best
    checkpoint's evaluation, the document of :class:`core.reporting.RunReport` (``RunReport.to_dict()``):
    per-split metrics, intervals, operating points, calibration.
    """

    TYPE: ClassVar[str] = "training_end"
    status: str
    best_epoch: int | None = None
    best_val_recall: float | None = None
    best_metrics: MetricDict = field(default_factory=dict)
    duration: float = 0.0
    final_stats: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class RunError(Event):
    """Something went wrong. ``fatal`` errors end the run; others (a failing sink) do not."""

    TYPE: ClassVar[str] = "run_error"
    message: str
    source: str = "training"
    fatal: bool = False
    details: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        TrainingStart,
        EpochEnd,
        BatchMetrics,
        GradientStats,
        LrUpdate,
        EarlyStopping,
        RoundStart,
        ClientUpdate,
        RoundMetrics,
        TrainingEnd,
        RunError,
    )
}


def event_from_dict(payload: dict[str, Any]) -> Event:
    """Rebuild an event from its envelope.

    Raises
    ------
    ValueError
        If the type is unknown, the version is newer than this build understands, or a field is
        missing or unexpected.
    """
    kind = payload.get("type")
    cls = EVENT_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}; expected one of {sorted(EVENT_TYPES)}")
    version = int(payload.get("version", SCHEMA_VERSION))
    if version > SCHEMA_VERSION:
        raise ValueError(f"event {kind!r} has schema version {version}; this build reads up to {SCHEMA_VERSION}")
    data = dict(payload.get("data") or {})
    try:
        return cls(timestamp=float(payload["timestamp"]), **data)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed {kind!r} event: {exc}") from exc


def event_from_json(text: str) -> Event:
    """Parse an event from its JSON string (see :func:`event_from_dict`)."""
    return event_from_dict(json.loads(text))
