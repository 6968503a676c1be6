"""Recorded runs as the browser reads them: batch series thinned in the database with their peaks kept."""

from __future__ import annotations

import math

import numpy as np
from sqlalchemy import insert

from core.jsonsafe import json_safe
from core.persistence.history import downsampled_batch_series
from core.persistence.models import metrics_table
from core.persistence.runs import create_run
from core.persistence.snapshot import run_snapshot, run_summaries


def _batch_rows(run_id: int, values: np.ndarray, name: str = "train_loss") -> list[dict]:
    return [
        {
            "run_id": run_id,
            "metric_name": name,
            "metric_value": float(v),
            "step": i,
            "dataset_type": "train",
            "context": "batch",
            "site_id": None,
            "round_number": None,
        }
        for i, v in enumerate(values)
    ]


def test_a_long_series_is_thinned_in_the_database_keeping_its_peaks(db):
    rng = np.random.default_rng(1)
    values = 1.0 + rng.normal(0, 0.01, 20_000)
    values[12_345] = 9.0  # one spike, as a diverging batch would show
    values[777] = -3.0
    with db.begin() as s:
        run_id = create_run(s, experiment_name="long", config={})
        s.execute(insert(metrics_table), _batch_rows(run_id, values))
        s.execute(insert(metrics_table), _batch_rows(run_id, values[:50], name="lr"))
    with db.begin() as s:
        series = downsampled_batch_series(s, run_id, ["train_loss", "lr", "missing"], max_points=1000)
    steps, thinned = series["train_loss"]
    assert len(thinned) <= 1002 and np.all(np.diff(steps) >= 0)
    assert thinned.max() == 9.0 and thinned.min() == -3.0  # the peaks survive
    assert steps[0] == 0 and steps[-1] >= 19_980
    assert list(series["lr"][1]) == list(values[:50])  # a short series comes back whole
    assert "missing" not in series


def test_the_snapshot_is_plain_json_without_nan(db):
    with db.begin() as s:
        run_id = create_run(s, experiment_name="<b>x</b>", config={})
        s.execute(insert(metrics_table), _batch_rows(run_id, np.array([0.5, math.nan, 0.4])))
    with db.begin() as s:
        document = run_snapshot(s, run_id)
        listed = run_summaries(s, name="<b>")
    assert document["run"]["experiment_name"] == "<b>x</b>" and listed[0]["id"] == run_id
    assert document["batch"]["train_loss"] == [[0.0, 1.0, 2.0], [0.5, None, 0.4]]
    assert json_safe({"a": float("inf"), "b": [np.float32(1.5)]}) == {"a": None, "b": [1.5]}
