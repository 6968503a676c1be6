"""Migration 0008 on a database PneumoFL 0007 really wrote, on SQLite and PostgreSQL: the renames keep every
value, the final statistics end up stored once, and nothing a user could see before is lost."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from core.persistence import Database
from core.persistence.engine import MIGRATIONS_DIR, create_db_engine
from core.persistence.federation import load_federation
from core.persistence.federation_records import federated_runs, flower_run_ids, list_sites
from core.persistence.metric_reads import get_metrics, run_report
from core.persistence.runs import create_run, get_run, list_runs

FLOWER_RUN = 2**64 - 3  # Flower's run ids are unsigned 64-bit


def _at_revision(url: str, revision: str, step=command.upgrade) -> None:
    """Migrate the database at ``url`` up (or, with ``step=command.downgrade``, down) to ``revision``."""
    engine = create_db_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            step(config, revision)
    finally:
        engine.dispose()


def _run(connection, run_id: int, role: str, **columns: object) -> None:
    values = {
        "id": run_id,
        "experiment_name": "old",
        "training_mode": "federated" if role != "standalone" else "centralized",
        "role": role,
        "status": "completed",
        "start_time": datetime(2026, 11, 1, tzinfo=UTC).replace(tzinfo=None),
        "source_path": "",
        "config": "{}",
        "host": "h",
        "pid": 1,
        "federation_run_id": None,
        "best_epoch": None,
        "best_val_recall": None,
        "best_val_auroc": None,
        "best_val_specificity": None,
        "final_stats": None,
    } | columns
    names = ", ".join(values)
    connection.execute(text(f"INSERT INTO runs ({names}) VALUES ({', '.join(':' + n for n in values)})"), values)


def _metric(connection, run_id: int, name: str, value: float, step: int, context: str, **more: object) -> None:
    row = {"client_id": None, "round_id": None} | more
    connection.execute(
        text(
            "INSERT INTO run_metrics (run_id, metric_name, metric_value, step, dataset_type, context, client_id, "
            "round_id) VALUES (:run_id, :name, :value, :step, 'validation', :context, :client_id, :round_id)"
        ),
        {"run_id": run_id, "name": name, "value": value, "step": step, "context": context, **row},
    )


def test_an_0007_database_keeps_everything_through_the_renames(db_url: str) -> None:
    _at_revision(db_url, "0007")
    engine = create_db_engine(db_url)
    with engine.begin() as c:
        # 1: a centralized run from before final_stats existed: its statistics are only final_epoch/curve rows.
        _run(c, 1, "standalone", best_epoch=2, best_val_recall=0.8, best_val_auroc=0.9)
        _metric(c, 1, "val_recall", 0.8, 2, "epoch_end")
        for name, value in (("val_recall", 0.81), ("test_recall", 0.7), ("youden_threshold", 0.4)):
            _metric(c, 1, name, value, 2, "final_epoch")
        for i, (fpr, tpr) in enumerate(((0.0, 0.0), (0.2, 0.7), (1.0, 1.0))):
            _metric(c, 1, "roc_fpr", fpr, i, "curve")
            _metric(c, 1, "roc_tpr", tpr, i, "curve")
        # 2: a federation server and 3: a site of the same Flower run (kept as text by 0007).
        _run(c, 2, "server", federation_run_id=str(FLOWER_RUN), best_epoch=1, final_stats='{"val": {"auroc": 0.7}}')
        _metric(c, 2, "val_auroc", 0.7, 1, "server_eval", round_id=1)
        _metric(c, 2, "train_loss", 0.5, 1, "aggregated", client_id="11", round_id=1)
        c.execute(text("INSERT INTO clients (run_id, client_id, client_name) VALUES (2, '11', 'north')"))
        c.execute(
            text(
                "INSERT INTO site_updates (run_id, round_number, client_id, client_name, failed, num_examples, time) "
                "VALUES (2, 1, '11', 'north', :no, 10, :t)"
            ),
            {"no": False, "t": datetime(2026, 11, 1)},
        )
        c.execute(
            text(
                "INSERT INTO rounds (run_id, round_number, server_metrics, aggregated_client_metrics) "
                "VALUES (2, 1, '{\"val_auroc\": 0.7}', '{\"train_loss\": 0.5}')"
            )
        )
        _run(c, 3, "client", federation_run_id=str(FLOWER_RUN), best_epoch=1, best_val_recall=0.6)
        # 4: a cancelled run whose best numbers were only ever in the columns.
        _run(c, 4, "standalone", status="cancelled", best_epoch=3, best_val_specificity=0.55)
    engine.dispose()

    with Database.open(db_url) as db, db.begin() as s:
        old = get_run(s, 1)
        assert (old.best_val_recall, old.best_val_auroc) == (0.8, 0.9)  # the epoch row, then the column's
        report = run_report(s, 1)
        assert report.metrics("val").values["recall"] == 0.81 and report.metrics("test").values["recall"] == 0.7
        assert report.operating_points["youden"].threshold == 0.4
        assert report.roc is not None and list(report.roc.tpr) == [0.0, 0.7, 1.0]
        assert {m.context for m in get_metrics(s, 1)} == {"epoch_end"}, "final_epoch and curve rows are folded in"

        assert [r.role for r in list_runs(s, sort_by="id", descending=False)] == [
            "standalone",
            "server",
            "site",
            "standalone",
        ]
        assert [r.id for r in federated_runs(s, FLOWER_RUN)] == [2, 3]
        assert flower_run_ids(s, 3) == [FLOWER_RUN]
        assert list_sites(s, 2) == [("11", "north")]
        history = load_federation(s, 2)
        assert [(r.site_id, r.site_name, r.metrics) for r in history.replies] == [("11", "north", {"train_loss": 0.5})]
        assert history.rounds[0]["aggregated_site_metrics"] == {"train_loss": 0.5}
        assert [(m.site_id, m.round_number) for m in get_metrics(s, 2, context="aggregated")] == [("11", 1)]
        assert get_run(s, 2).best_val_auroc == 0.7
        assert get_run(s, 3).best_val_recall == 0.6
        assert get_run(s, 4).best_val_specificity == 0.55


def test_0008_downgrades_and_upgrades_again(db_url: str) -> None:
    with Database.open(db_url) as db, db.begin() as s:
        create_run(s, experiment_name="fed", training_mode="federated", role="site", config={}, flower_run_id=9)
    _at_revision(db_url, "0007", step=command.downgrade)
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT role, federation_run_id FROM runs")).one() == ("client", "9")
    finally:
        engine.dispose()
    with Database.open(db_url) as db, db.begin() as s:
        assert [r.role for r in list_runs(s)] == ["site"] and federated_runs(s, 9)
