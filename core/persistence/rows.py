"""How events become metric rows: one mapping shared by the database sink, the file sink and exports.

Rows are tuples in :data:`COLUMNS` order: cheaper to build on the training thread than dicts, and SQLite's
executemany takes them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.events import (
    BatchMetrics,
    ClientUpdate,
    EarlyStopping,
    EpochEnd,
    Event,
    GradientStats,
    LrUpdate,
    RoundMetrics,
    TrainingEnd,
)
from core.reporting import RunReport
from core.reporting.records import SPLITS

COLUMNS = ("run_id", "metric_name", "metric_value", "step", "dataset_type", "context", "site_id", "round_number")
CONTEXT_INDEX = COLUMNS.index("context")
Row = tuple[Any, ...]
_PREFIXES = (("train_", "train"), ("val_", "validation"), ("test_", "test"), ("youden_val_", "validation"))


def dataset_type_of(name: str) -> str:
    """``train_*`` -> train, ``val_*`` -> validation, ``test_*`` -> test, anything else -> other."""
    for prefix, kind in _PREFIXES:
        if name.startswith(prefix):
            return kind
    return "other"


def metric_rows(
    run_id: int | None,
    event: Event,
    metrics: Mapping[str, Any],
    step: int,
    context: str,
    dataset_type: str | None = None,
    site_id: str | bool | None = True,
) -> list[Row]:
    """Rows for ``metrics`` at ``step``; ``site_id=True`` takes the event's site (its v1 field ``client_id``)."""
    site = event.client_id if site_id is True else site_id
    step = int(step)
    # float(): numpy/torch scalars would not bind in sqlite3. Names are cut to the column's 255 characters:
    # one over-long name would otherwise fail every retry of the whole backlog on PostgreSQL.
    return [
        (
            run_id,
            name if len(name) <= 255 else name[:255],
            float(value),
            step,
            dataset_type or dataset_type_of(name),
            context,
            site,
            event.round_number,
        )
        for name, value in metrics.items()
    ]


def event_rows(event: Event, run_id: int | None) -> list[Row]:
    """Every metric row ``event`` records (none for events that carry no metric)."""
    if isinstance(event, BatchMetrics):
        return metric_rows(run_id, event, event.metrics, event.step, "batch", "train")
    if isinstance(event, GradientStats):
        metrics = {"grad_norm": event.global_norm} | {f"grad_norm/{k}": v for k, v in event.layer_norms.items()}
        return metric_rows(run_id, event, metrics, event.step, "batch", "other")
    if isinstance(event, LrUpdate):
        return metric_rows(run_id, event, {"lr": event.lr}, event.step, "batch", "other")
    if isinstance(event, EpochEnd):
        return metric_rows(run_id, event, event.metrics, event.epoch, "epoch_end")
    if isinstance(event, EarlyStopping):
        return metric_rows(run_id, event, {"early_stopping": event.best_value}, event.epoch, "epoch_end", "other")
    if isinstance(event, ClientUpdate):
        return metric_rows(run_id, event, event.metrics, event.round_number or 0, "aggregated")
    if isinstance(event, RoundMetrics):
        number = event.round_number or 0
        rows = metric_rows(run_id, event, event.aggregated_client_metrics, number, "aggregated", site_id=None)
        rows += metric_rows(run_id, event, event.server_metrics, number, "server_eval", "validation", site_id=None)
        return rows
    # TrainingEnd's numbers are stored once, as the run's final_stats document (see final_rows for exports).
    return []


def final_rows(run_id: int, report: RunReport, best_epoch: int | None) -> list[Row]:
    """The final statistics as long-format rows, derived from the report for exports (never stored).

    ``final_epoch`` rows at the best epoch, the ROC as ``curve`` rows: the same rows every export wrote
    when they were still stored (before migration 0008).
    """
    step = best_epoch or 0
    event = TrainingEnd(status="completed")
    rows: list[Row] = []
    for split in SPLITS:
        metrics = numbers(report.metrics(split).values)
        rows += metric_rows(run_id, event, {f"{split}_{k}": v for k, v in metrics.items()}, step, "final_epoch")
    youden = report.operating_points.get("youden")
    if youden is not None:
        rows += metric_rows(run_id, event, {"youden_threshold": youden.threshold}, step, "final_epoch", "other")
        metrics = {f"youden_val_{k}": v for k, v in numbers(youden.metrics("val").values).items()}
        rows += metric_rows(run_id, event, metrics, step, "final_epoch", "validation")
    if report.roc:
        for name, values in (("fpr", report.roc.fpr), ("tpr", report.roc.tpr)):
            for i, value in enumerate(values):
                rows += metric_rows(run_id, event, {f"roc_{name}": value}, i, "curve", "validation")
    return rows


def is_number(value: Any) -> bool:
    """Whether ``value`` converts to float (numpy and 0-d torch scalars included, text excluded)."""
    return hasattr(value, "__float__") and not isinstance(value, (str, bytes))


def numbers(metrics: Any) -> dict[str, float]:
    """The numeric entries of a mapping (confusion-matrix lists and the like are skipped)."""
    if not isinstance(metrics, Mapping):
        return {}
    return {str(k): float(v) for k, v in metrics.items() if is_number(v)}
