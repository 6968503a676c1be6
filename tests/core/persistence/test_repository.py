"""Repository functions on real SQLite and PostgreSQL: runs CRUD, metric reads, and no N+1 queries."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event, func, insert, select

from core.errors import RunNotFoundError
from core.persistence import Database
from core.persistence.federation_records import (
    federated_runs,
    find_federated_run,
    flower_run_ids,
    link_flower_run,
    record_round,
    upsert_site,
)
from core.persistence.metric_reads import epoch_table, final_stats, get_metrics, metric_series
from core.persistence.models import flower_runs_table, metrics_table, rounds_table, sites_table
from core.persistence.runs import count_runs, create_run, delete_run, finish_run, get_run, list_runs
from tests.core.persistence_helpers import best_metric, metric_stats


def _row(run_id: int, name: str, value: float, step: int, context: str = "epoch_end", **extra: object) -> dict:
    dataset = {"train": "train", "val": "validation", "test": "test"}.get(name.split("_", 1)[0], "other")
    return {
        "run_id": run_id,
        "metric_name": name,
        "metric_value": value,
        "step": step,
        "dataset_type": dataset,
        "context": context,
        "site_id": extra.get("site_id"),
        "round_number": extra.get("round_number"),
    }


def _make_run(db: Database, epochs: int, name: str = "exp") -> int:
    with db.begin() as session:
        run_id = create_run(session, experiment_name=name, config={"epochs": epochs, "lr": 0.001})
        rows = []
        for epoch in range(1, epochs + 1):
            rows += [
                _row(run_id, "train_loss", 1.0 / epoch, epoch),
                _row(run_id, "val_loss", 1.5 / epoch, epoch),
                _row(run_id, "val_recall", min(0.99, 0.5 + epoch / 1000), epoch),
            ]
            rows += [_row(run_id, "train_loss", 1.0 / epoch, epoch * 10 + b, "batch") for b in range(3)]
        session.execute(insert(metrics_table), rows)
        final = {"val": {"recall": 0.9, "cm_tp": 40.0}, "test": {"recall": 0.85}, "youden": {"threshold": 0.42}}
        finish_run(session, run_id, status="completed", best_epoch=2, final_stats=final, duration=12.5)
    return run_id


def test_create_get_finish(db: Database) -> None:
    with db.begin() as session:
        run_id = create_run(
            session,
            experiment_name="fed",
            training_mode="federated",
            role="site",
            config={"nested": {"x": [1, 2]}, "bad": math.nan},
            source_path="/data",
            flower_run_id=2**64 - 5,  # Flower's run ids are unsigned 64-bit
            server_address="10.0.0.1:9092",
        )
    with db.begin() as session:
        run = get_run(session, run_id)
        assert (run.status, run.training_mode, run.role) == ("in_progress", "federated", "site")
        assert flower_run_ids(session, run_id) == [2**64 - 5]
        assert run.config == {"nested": {"x": [1, 2]}, "bad": None}
        assert run.end_time is None and run.pid > 0 and run.host
        finish_run(session, run_id, status="failed", duration=3.0, error_message="boom")
    with db.begin() as session:
        run = get_run(session, run_id)
        assert (run.status, run.error_message, run.duration) == ("failed", "boom", 3.0)
        assert run.end_time is not None and run.end_time >= run.start_time
        with pytest.raises(ValueError, match="status must be one of"):
            finish_run(session, run_id, status="exploded")


def test_missing_run_message(db: Database) -> None:
    with db.begin() as session, pytest.raises(RunNotFoundError) as info:
        get_run(session, 12345)
    assert str(info.value).startswith("Run 12345 does not exist in ")
    assert "pneumofl runs list" in str(info.value)


def test_list_filter_sort_paginate_count(db: Database) -> None:
    with db.begin() as session:
        ids = [create_run(session, experiment_name=f"exp_{i % 3}_{i}", config={}) for i in range(10)]
        ids.append(create_run(session, experiment_name="100%_fed", training_mode="federated", role="server", config={}))
        for run_id, recall in ((ids[0], 0.7), (ids[1], 0.9)):
            session.execute(insert(metrics_table), [_row(run_id, "val_recall", recall, 1)])
            finish_run(session, run_id, status="completed", best_epoch=1)
    with db.begin() as session:
        assert count_runs(session) == 11
        assert count_runs(session, status="completed") == 2
        assert [r.id for r in list_runs(session, training_mode="federated")] == [ids[-1]]
        assert count_runs(session, name_contains="EXP_1") == 3  # case-insensitive
        assert count_runs(session, name_contains="%") == 1  # wildcards are literal
        assert count_runs(session, name_contains="_") == 11
        newest_first = [r.id for r in list_runs(session)]
        assert newest_first == sorted(ids, reverse=True)
        page = list_runs(session, sort_by="id", descending=False, limit=4, offset=4)
        assert [r.id for r in page] == ids[4:8]
        by_recall = list_runs(session, status="completed", sort_by="best_val_recall")
        assert [r.id for r in by_recall] == [ids[1], ids[0]]
        with pytest.raises(ValueError, match=r"valid keys: .*experiment_name"):
            list_runs(session, sort_by="id; DROP TABLE runs")


def test_delete_cascades(db: Database) -> None:
    run_id = _make_run(db, 3)
    keep = _make_run(db, 2)
    with db.begin() as session:
        upsert_site(session, run_id, "node-1", "Site A")
        link_flower_run(session, run_id, 77)
        record_round(session, run_id, 1, {"val_loss": 0.3}, {"train_loss": 0.4}, None, None)
    with db.begin() as session:
        delete_run(session, run_id)
    with db.begin() as session:
        for table in (metrics_table, sites_table, flower_runs_table, rounds_table):
            count = session.execute(select(func.count()).select_from(table).where(table.c.run_id == run_id))
            assert count.scalar_one() == 0
        assert get_metrics(session, keep)
        with pytest.raises(RunNotFoundError):
            get_run(session, run_id)
        with pytest.raises(RunNotFoundError):
            delete_run(session, run_id)


def test_metric_reads(db: Database) -> None:
    run_id = _make_run(db, 4)
    with db.begin() as session:
        steps, values = metric_series(session, run_id, "train_loss")
        assert steps == [1, 2, 3, 4] and values == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
        assert metric_series(session, run_id, "train_loss", context="batch")[0][:3] == [10, 11, 12]
        table = epoch_table(session, run_id)
        assert [r["epoch"] for r in table] == [1, 2, 3, 4]
        assert table[1] == {"epoch": 2, "train_loss": 0.5, "val_loss": 0.75, "val_recall": pytest.approx(0.502)}
        assert best_metric(session, run_id, "val_recall") == (4, pytest.approx(0.504))
        assert best_metric(session, run_id, "val_loss", mode="min") == (4, pytest.approx(0.375))
        assert best_metric(session, run_id, "nope") is None
        stats = metric_stats(session, run_id)
        assert stats["train_loss"]["count"] == 16
        assert stats["train_loss"]["max"] == 1.0 and stats["train_loss"]["last"] == 0.25
        assert stats["val_recall"]["count"] == 4
        assert final_stats(session, run_id) == {
            "val": {"recall": 0.9, "cm_tp": 40.0},
            "test": {"recall": 0.85},
            "youden": {"threshold": 0.42},
        }
        only_val = get_metrics(session, run_id, dataset_type="validation", context="epoch_end")
        assert {m.metric_name for m in only_val} == {"val_loss", "val_recall"}
        named = get_metrics(session, run_id, names=["val_loss"])
        assert [m.step for m in named] == [1, 2, 3, 4]


def test_nan_round_trips(db: Database) -> None:
    with db.begin() as session:
        run_id = create_run(session, experiment_name="nan", config={})
        session.execute(
            insert(metrics_table), [_row(run_id, "train_loss", math.nan, 1), _row(run_id, "train_loss", 2.0, 2)]
        )
    with db.begin() as session:
        values = metric_series(session, run_id, "train_loss")[1]
        assert math.isnan(values[0]) and values[1] == 2.0
        assert math.isnan(epoch_table(session, run_id)[0]["train_loss"])


def test_sites_and_rounds(db: Database) -> None:
    with db.begin() as session:
        run_id = create_run(session, experiment_name="fed", training_mode="federated", role="server", config={})
        upsert_site(session, run_id, "n1", "first")
        upsert_site(session, run_id, "n1", "renamed")
        record_round(session, run_id, 1, {"loss": math.inf}, {"acc": 0.5}, None, None)
        record_round(session, run_id, 1, {"loss": 0.2}, {"acc": 0.6}, None, None)
    with db.begin() as session:
        assert session.execute(select(sites_table.c.site_name)).scalars().all() == ["renamed"]
        rows = session.execute(select(rounds_table.c.server_metrics, rounds_table.c.aggregated_site_metrics)).all()
        assert [tuple(r) for r in rows] == [({"loss": 0.2}, {"acc": 0.6})]


def test_best_validation_numbers_are_derived_from_what_is_stored_once(db: Database) -> None:
    """A run's list row shows its best epoch's validation rows; a site's, its final statistics."""
    run_id = _make_run(db, 4)
    with db.begin() as session:
        site = create_run(session, experiment_name="fed", training_mode="federated", role="site", config={})
        session.execute(insert(metrics_table), [_row(site, "val_recall", 0.4, 2)])  # its local model's
        finish_run(session, site, status="completed", best_epoch=2, final_stats={"val": {"recall": 0.8}})
        cancelled = create_run(session, experiment_name="stopped", config={})
        session.execute(insert(metrics_table), [_row(cancelled, "val_auroc", 0.66, 1)])
        finish_run(session, cancelled, status="cancelled", best_epoch=1)
    with db.begin() as session:
        assert get_run(session, run_id).best_val_recall == pytest.approx(0.502)  # epoch 2's row, not the report
        assert get_run(session, site).best_val_recall == pytest.approx(0.8)
        stopped = get_run(session, cancelled)
        assert (stopped.best_val_auroc, stopped.best_val_recall, stopped.final_stats) == (0.66, None, None)
        by_auroc = list_runs(session, sort_by="best_val_auroc", descending=True, limit=1)
        assert [r.id for r in by_auroc] == [cancelled]


def test_a_federation_spans_flower_runs(db: Database) -> None:
    """A resumed federation is a new Flower run: the same server and site runs are found through either."""
    with db.begin() as session:
        site = create_run(
            session, experiment_name="fed", training_mode="federated", role="site", config={}, flower_run_id=5
        )
        server = create_run(
            session, experiment_name="fed", training_mode="federated", role="server", config={}, flower_run_id=5
        )
        for run_id in (site, server):
            link_flower_run(session, run_id, 2**63 + 1)
            link_flower_run(session, run_id, 2**63 + 1)  # once
    with db.begin() as session:
        assert flower_run_ids(session, server) == [5, 2**63 + 1]
        assert [r.id for r in federated_runs(session, 2**63 + 1)] == [server, site]  # the server first
        assert find_federated_run(session, 5, "site", "fed") == site
        assert find_federated_run(session, 6, "site", "fed") is None


@contextmanager
def _count_statements(db: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", before)


def _open_run(db: Database, run_id: int) -> None:
    with db.begin() as session:
        get_run(session, run_id)
        epoch_table(session, run_id)
        final_stats(session, run_id)
        metric_stats(session, run_id)


def test_opening_a_run_costs_the_same_for_3_and_300_epochs(db: Database) -> None:
    small, large = _make_run(db, 3), _make_run(db, 300)
    _open_run(db, small)  # warm up the pool (pre-ping and the like)
    with _count_statements(db) as small_statements:
        _open_run(db, small)
    with _count_statements(db) as large_statements:
        _open_run(db, large)
    assert len(small_statements) == len(large_statements) <= 6
    with db.begin() as session:
        assert len(epoch_table(session, large)) == 300
