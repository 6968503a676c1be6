"""Recorded runs as JSON-ready documents for the browser dashboard: the list of runs, and one run's charts.

Every number is a plain float or ``None`` (JSON has no NaN); batch series are thinned in the database
(:func:`~core.persistence.history.downsampled_batch_series`), so a run with a million batch points is a few
thousand points over the wire.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.jsonsafe import json_safe
from core.persistence.federation import load_federation
from core.persistence.history import downsampled_batch_series, load_run_history, metric_names
from core.persistence.models import metrics_table as m
from core.persistence.runs import RunRecord, list_runs

TOP_LAYERS = 5  # gradient norms of the layers with the largest last value, as the desktop draws them
SUMMARY_FIELDS = (
    "id",
    "experiment_name",
    "training_mode",
    "role",
    "status",
    "start_time",
    "end_time",
    "duration",
    "best_epoch",
    "best_val_auroc",
    "best_val_recall",
    "best_val_specificity",
    "error_message",
    "server_address",
)


def run_summaries(
    session: Session,
    *,
    mode: str | None = None,
    status: str | None = None,
    name: str | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Runs newest first, filtered like the Runs page (mode, status, part of the name)."""
    runs = list_runs(session, training_mode=mode, status=status, name_contains=name, limit=limit)
    return [summary(run) for run in runs]


def summary(run: RunRecord) -> dict[str, Any]:
    """The run's row: names, status, times and its best epoch's validation numbers."""
    return {field: json_safe(getattr(run, field)) for field in SUMMARY_FIELDS}


def run_snapshot(session: Session, run_id: int, *, max_points: int = 2000) -> dict[str, Any]:
    """Everything the run page draws, as recorded now.

    Raises
    ------
    core.errors.RunNotFoundError
        If the run does not exist.
    """
    history = load_run_history(session, run_id, include_batch=False)
    run = history.run
    document: dict[str, Any] = {
        "run": summary(run),
        "epochs": {name: pair(xs, ys) for name, (xs, ys) in history.epoch_series.items()},
        "early_stopping_epoch": history.early_stopping_epoch,
        "final_stats": json_safe(history.report.to_dict()),
        "roc": json_safe(history.roc),
        "batch": {},
        "federation": None,
    }
    if run.role == "server":
        federation = load_federation(session, run_id)
        document["federation"] = {
            "rounds": json_safe(federation.rounds),
            "replies": [json_safe(vars(reply)) for reply in federation.replies],
            "sites": federation.sites,
        }
        return document
    names = [n for n in metric_names(session, run_id) if n in ("train_loss", "grad_norm", "lr")]
    names += _top_layers(session, run_id)
    series = downsampled_batch_series(session, run_id, names, max_points)
    document["batch"] = {name: pair(xs, ys) for name, (xs, ys) in series.items()}
    return document


def _top_layers(session: Session, run_id: int) -> list[str]:
    layers = [n for n in metric_names(session, run_id) if n.startswith("grad_norm/")]
    last: dict[str, float] = {}
    for name in layers:
        value = session.execute(
            select(m.c.metric_value)
            .where(m.c.run_id == run_id, m.c.metric_name == name, m.c.context == "batch")
            .order_by(m.c.step.desc())
            .limit(1)
        ).scalar()
        last[name] = value if value is not None and math.isfinite(value) else -math.inf
    return sorted(layers, key=lambda n: -last[n])[:TOP_LAYERS]


def pair(xs: np.ndarray, ys: np.ndarray) -> list[list[float | None]]:
    """``[[x...], [y...]]`` with NaN as ``None``."""
    return [json_safe(np.asarray(xs).tolist()), json_safe(np.asarray(ys).tolist())]
