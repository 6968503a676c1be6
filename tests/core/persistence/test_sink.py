"""The database sink, driven with real events into real SQLite and PostgreSQL databases."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.errors import DatabaseError
from core.events import (
    BatchMetrics,
    ClientUpdate,
    EarlyStopping,
    EpochEnd,
    GradientStats,
    LrUpdate,
    RoundMetrics,
    RoundStart,
    RunError,
    TrainingEnd,
    TrainingStart,
)
from core.persistence import Database, DatabaseSink
from core.persistence.engine import create_db_engine
from core.persistence.metric_reads import epoch_table, final_stats, get_metrics
from core.persistence.models import metrics_table, rounds_table, sites_table
from core.persistence.runs import create_run, get_run
from core.sinks import ListSink, SinkSet

ROOT = Path(__file__).resolve().parents[3]


def _new_run(db: Database, **kwargs: object) -> int:
    with db.begin() as session:
        return create_run(session, experiment_name="sink", config={"epochs": 2}, **kwargs)  # type: ignore[arg-type]


def _rows(db: Database, run_id: int) -> set[tuple]:
    with db.begin() as session:
        return {tuple(m) for m in get_metrics(session, run_id)}


def _count_metrics(url: str, run_id: int) -> int:
    """Count rows through a brand-new engine: proves they are committed, not just visible to the sink."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            query = select(func.count()).select_from(metrics_table).where(metrics_table.c.run_id == run_id)
            return int(connection.execute(query).scalar_one())
    finally:
        engine.dispose()


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_every_event_maps_to_rows(db: Database) -> None:
    run_id = _new_run(db)
    sink = DatabaseSink(db, run_id)
    sink.handle(TrainingStart(experiment_name="sink", total_epochs=2))
    sink.handle(BatchMetrics(epoch=1, step=5, metrics={"train_loss": 0.9, "train_accuracy": 0.6}))
    sink.handle(GradientStats(step=5, global_norm=2.5, layer_norms={"fc.weight": 1.5}))
    sink.handle(LrUpdate(epoch=1, step=5, lr=0.001))
    epoch = {"train_loss": 0.8, "val_recall": 0.7, "val_auroc": 0.91, "val_specificity": 0.6, "test_auc": 0.5}
    sink.handle(EpochEnd(epoch=1, metrics=epoch | {"extra": 3.0}))
    sink.handle(EarlyStopping(epoch=1, monitor="val_recall", best_value=0.7, patience=3, reason="no gain"))
    sink.handle(RunError(message="a sink wobbled", fatal=False))
    sink.handle(RoundStart(round_number=1, num_clients=2))
    sink.handle(ClientUpdate(client_id="node-7", round_number=1, num_examples=10, metrics={"train_loss": 0.4}))
    sink.handle(
        RoundMetrics(round_number=1, server_metrics={"val_loss": 0.3}, aggregated_client_metrics={"train_loss": 0.45})
    )
    sink.handle(RunError(message="out of memory", fatal=True))
    final = {
        "val": {"recall": 0.7, "cm_tp": 12, "curve": [1, 2]},
        "test": {"recall": 0.65},
        "youden": {"threshold": 0.4, "val": {"recall": 0.8}},
    }
    best = {"val_recall": 0.7, "val_auroc": 0.91, "val_specificity": 0.6}
    sink.handle(
        TrainingEnd(
            status="failed", best_epoch=1, best_val_recall=0.7, best_metrics=best, duration=9.5, final_stats=final
        )
    )
    sink.close()

    assert _rows(db, run_id) == {
        ("train_loss", 0.9, 5, "train", "batch", None, None),
        ("train_accuracy", 0.6, 5, "train", "batch", None, None),
        ("grad_norm", 2.5, 5, "other", "batch", None, None),
        ("grad_norm/fc.weight", 1.5, 5, "other", "batch", None, None),
        ("lr", 0.001, 5, "other", "batch", None, None),
        ("train_loss", 0.8, 1, "train", "epoch_end", None, None),
        ("val_recall", 0.7, 1, "validation", "epoch_end", None, None),
        ("val_auroc", 0.91, 1, "validation", "epoch_end", None, None),
        ("val_specificity", 0.6, 1, "validation", "epoch_end", None, None),
        ("test_auc", 0.5, 1, "test", "epoch_end", None, None),
        ("extra", 3.0, 1, "other", "epoch_end", None, None),
        ("early_stopping", 0.7, 1, "other", "epoch_end", None, None),
        ("train_loss", 0.4, 1, "train", "aggregated", "node-7", 1),
        ("train_loss", 0.45, 1, "train", "aggregated", None, 1),
        ("val_loss", 0.3, 1, "validation", "server_eval", None, 1),
    }
    with db.begin() as session:
        run = get_run(session, run_id)
        assert (run.status, run.best_epoch, run.best_val_recall, run.duration) == ("failed", 1, 0.7, 9.5)
        assert run.error_message == "out of memory" and run.end_time is not None
        assert (run.best_val_auroc, run.best_val_specificity) == (0.91, 0.6)
        # The final statistics are kept once, as the document came; the best epoch's numbers are its rows.
        assert final_stats(session, run_id) == final
        assert session.execute(select(sites_table.c.site_id, sites_table.c.site_name)).all() == [
            ("node-7", "node-7")
        ]
        round_row = session.execute(select(rounds_table)).mappings().one()
        assert round_row["server_metrics"] == {"val_loss": 0.3} and round_row["start_time"] <= round_row["end_time"]


def test_epoch_end_is_flushed_without_close(db: Database, db_url: str) -> None:
    run_id = _new_run(db)
    sink = DatabaseSink(db, run_id, flush_rows=10**9)
    try:
        for step in range(50):
            sink.handle(BatchMetrics(epoch=1, step=step, metrics={"train_loss": 1.0}))
        time.sleep(0.2)
        assert _count_metrics(db_url, run_id) == 0  # batch rows alone wait for a flush trigger
        sink.handle(EpochEnd(epoch=1, metrics={"train_loss": 0.5, "val_recall": 0.6}))
        assert _wait_for(lambda: _count_metrics(db_url, run_id) == 52, timeout=5)
        for step in range(50, 60):
            sink.handle(BatchMetrics(epoch=2, step=step, metrics={"train_loss": 1.0}))
        sink.flush(wait=True)
        assert _count_metrics(db_url, run_id) == 62
    finally:
        sink.close()


def test_size_trigger_and_close_make_everything_durable(db: Database, db_url: str) -> None:
    run_id = _new_run(db)
    sink = DatabaseSink(db, run_id, flush_rows=100, chunk_rows=64)
    for step in range(1000):
        sink.handle(BatchMetrics(epoch=1, step=step, metrics={"train_loss": 1.0, "train_accuracy": 0.5}))
    assert _wait_for(lambda: _count_metrics(db_url, run_id) >= 1800, timeout=10)  # flushed before close
    sink.close()
    assert _count_metrics(db_url, run_id) == 2000
    assert sink.pending_rows == 0 and sink.written_rows == 2000
    sink.handle(BatchMetrics(epoch=1, step=1, metrics={"x": 1.0}))  # after close: ignored, not an error


def test_kill_9_keeps_completed_epochs(db_url: str) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from core.events import BatchMetrics, EpochEnd
        from core.persistence import Database, DatabaseSink
        from core.persistence.runs import create_run
        db = Database.open({db_url!r})
        with db.begin() as session:
            run_id = create_run(session, experiment_name="killed", config={{}})
        print(run_id, flush=True)
        sink = DatabaseSink(db, run_id)
        for epoch in (1, 2, 3):
            for step in range(20):
                sink.handle(BatchMetrics(epoch=epoch, step=epoch * 100 + step, metrics={{"train_loss": 1.0}}))
            sink.handle(EpochEnd(epoch=epoch, metrics={{"train_loss": 0.5, "val_recall": 0.6}}))
        for step in range(20):  # the next epoch is running when the process is killed
            sink.handle(BatchMetrics(epoch=4, step=400 + step, metrics={{"train_loss": 1.0}}))
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    run_id = int(done.stdout.split()[0])
    with Database.open(db_url) as db, db.begin() as session:
        assert [row["epoch"] for row in epoch_table(session, run_id)] == [1, 2, 3]
        assert get_run(session, run_id).status == "interrupted"  # the dead pid was noticed at open


def _drop_metrics_table(db: Database) -> None:
    with db.engine.begin() as connection:
        metrics_table.drop(connection)


def _restore_metrics_table(db: Database) -> None:
    with db.engine.begin() as connection:
        metrics_table.create(connection)


def test_failing_database_is_reported_once_and_rows_are_retried(db: Database) -> None:
    run_id = _new_run(db)
    sink = DatabaseSink(db, run_id, retry_after_s=0.05)
    events = ListSink()
    sinks = SinkSet([sink, events])
    _drop_metrics_table(db)
    for epoch in range(1, 6):
        sinks.handle(BatchMetrics(epoch=epoch, step=epoch, metrics={"train_loss": 1.0}))
        sinks.handle(EpochEnd(epoch=epoch, metrics={"train_loss": 0.5}))  # must not raise
        time.sleep(0.05)
    sink.flush(wait=False)
    assert _wait_for(lambda: not sink._problems and sink._last_error is not None)
    sinks.handle(BatchMetrics(epoch=6, step=6, metrics={"train_loss": 1.0}))
    reports = events.of_type(RunError)
    assert len(reports) == 1 and reports[0].source == "database" and not reports[0].fatal
    assert "database" in reports[0].message and "Training continues" in reports[0].message
    assert sink.pending_rows == 11
    _restore_metrics_table(db)  # the database comes back: the kept rows go in on the next flush
    sinks.close()
    assert len(_rows(db, run_id)) == 11 and len(events.of_type(RunError)) == 1


def test_unreachable_server_never_raises_out_of_sinkset() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = Database(create_db_engine(f"postgresql://pneumo:pw@127.0.0.1:{port}/pneumo"))
    sink = DatabaseSink(dead, 1, epoch_wait_s=5)
    events = ListSink()
    sinks = SinkSet([sink, events])
    for epoch in range(1, 4):
        sinks.handle(EpochEnd(epoch=epoch, metrics={"train_loss": 0.5}))
        _wait_for(lambda: sink._last_error is not None, timeout=5)
    sinks.handle(TrainingEnd(status="completed", best_epoch=1))
    sinks.close()  # close fails too, reported (once per sink) rather than raised
    reports = events.of_type(RunError)
    assert len(reports) == 1 and "127.0.0.1" in reports[0].message and "pw" not in reports[0].message
    with pytest.raises(DatabaseError, match="not saved yet"):
        sink.flush(wait=True)
    dead.close()


def test_backlog_drops_oldest_batch_rows_never_epoch_rows(db: Database) -> None:
    run_id = _new_run(db)
    sink = DatabaseSink(db, run_id, max_pending_rows=200, flush_rows=10**9, retry_after_s=0.01)
    events = ListSink()
    sinks = SinkSet([sink, events])
    _drop_metrics_table(db)
    step = 0
    for epoch in range(1, 11):
        for _ in range(100):
            step += 1
            sinks.handle(BatchMetrics(epoch=epoch, step=step, metrics={"train_loss": 1.0}))
        sinks.handle(EpochEnd(epoch=epoch, metrics={"train_loss": 0.5, "val_recall": 0.7}))
        _wait_for(lambda: sink._requested == sink._handled, timeout=5)
    assert sink.dropped_rows >= 800 and sink.pending_rows <= 200
    _restore_metrics_table(db)
    sinks.close()
    with db.begin() as session:
        assert [row["epoch"] for row in epoch_table(session, run_id)] == list(range(1, 11))
        batch = get_metrics(session, run_id, context="batch")
    assert len(batch) + sink.dropped_rows == 1000
    assert [m.step for m in batch] == list(range(1001 - len(batch), 1001))  # the newest survived
    messages = [e.message for e in events.of_type(RunError)]
    assert len(messages) == 1 and ("dropped" in messages[0] or "not saved" in messages[0])


def test_slow_flush_blocks_at_most_one_epoch(db: Database) -> None:
    run_id = _new_run(db)
    sink = DatabaseSink(db, run_id)
    try:
        for epoch in range(1, 21):
            sink.handle(EpochEnd(epoch=epoch, metrics={"train_loss": 1.0 / epoch}))
            # At most this epoch's flush can be outstanding once handle() returns.
            assert sink._requested - sink._handled <= 1
    finally:
        sink.close()
    with db.begin() as session:
        assert len(epoch_table(session, run_id)) == 20
