"""The Runs page, run viewer and comparison with real widgets over runs really trained into SQLite."""

import json

import numpy as np
import pytest
from PySide6.QtCore import Qt

from core.persistence import Database
from core.persistence.history import load_run_history
from core.persistence.metric_reads import epoch_table
from core.persistence.runs import count_runs
from core.training.recorded import train_and_record
from desktop.charts.federation import STATUS_COLUMN, FederationDashboard
from desktop.gui.runs_page import CompareView, RunsPage, RunViewer
from tests.desktop.conftest import tiny_gui_config
from tests.recorded_federation import record_federation


@pytest.fixture(scope="module")
def trained_db(tmp_path_factory, gui_dataset):
    folder = tmp_path_factory.mktemp("runs-db")
    db = Database.open(f"sqlite:///{folder / 'runs.db'}")
    base = tiny_gui_config(gui_dataset)
    ids = []
    for name, lr in (("baseline", 1e-3), ("fast-lr", 5e-3)):
        result = train_and_record(
            base.with_overrides(experiment_name=name, learning_rate=lr), db, work_dir=folder / name
        )
        assert result.status == "completed", result.error
        ids.append(result.run_id)
    yield db, ids
    db.close()


def test_table_lists_filters_and_sorts_runs(qtbot, trained_db):
    db, ids = trained_db
    page = RunsPage(db)
    qtbot.addWidget(page)
    assert page.model.rowCount() == 2 and "2 run(s)" in page.count_label.text()
    page.name_filter.setText("fast")
    page.apply_filters()
    assert [r.experiment_name for r in page.model.rows] == ["fast-lr"]
    page.name_filter.setText("")
    page.model.sort(0, Qt.SortOrder.AscendingOrder)
    assert [r.id for r in page.model.rows] == sorted(ids)


def test_open_a_past_run_rebuilds_the_charts_from_the_database(qtbot, trained_db):
    db, ids = trained_db
    viewer = RunViewer(db, ids[0])
    qtbot.addWidget(viewer)
    qtbot.waitUntil(lambda: viewer.full_loaded, timeout=20_000)  # batch series arrive from a background thread
    with db.begin() as session:
        table = epoch_table(session, ids[0])
        history = load_run_history(session, ids[0])
    xs, ys = viewer.dashboard.curve_data("val_recall")
    np.testing.assert_array_equal(xs, [row["epoch"] for row in table])
    np.testing.assert_allclose(ys, [row["val_recall"] for row in table])
    xs, ys = viewer.dashboard.curve_data("batch/train_loss")
    np.testing.assert_allclose(ys, history.batch_series["train_loss"][1])
    stats = history.final_stats
    auroc = stats["val"]["auroc"]
    low, high = stats["intervals"]["val"]["auroc"]
    assert viewer.stats.cell(viewer.stats.metrics, 0, 0) == f"{auroc:.3f} ({low:.3f}-{high:.3f})"
    assert viewer.dashboard.cm_view.values["tp"] == history.final_stats["val"]["cm_tp"]
    assert history.roc and viewer.dashboard.roc_curve.getData()[0] is not None
    assert f"Run {ids[0]}" in viewer.title.text()


def test_overlay_two_runs(qtbot, trained_db):
    db, ids = trained_db
    view = CompareView(db, ids)
    qtbot.addWidget(view)
    view.metric.setCurrentText("train_loss")
    with db.begin() as session:
        expected = {i: [row["train_loss"] for row in epoch_table(session, i)] for i in ids}
    assert set(view.curves) == set(ids)
    for run_id, curve in view.curves.items():
        np.testing.assert_allclose(curve.getData()[1], expected[run_id])


def test_page_buttons_open_compare_export_and_delete(qtbot, trained_db, tmp_path):
    db, ids = trained_db
    page = RunsPage(db)
    qtbot.addWidget(page)
    page.select_ids(ids)
    assert page.selected_ids() == [r.id for r in page.model.rows]
    with qtbot.waitSignal(page.compare_requested) as compared:
        page.buttons["Compare"].click()
    assert sorted(compared.args[0]) == sorted(ids)
    with qtbot.waitSignal(page.open_requested):
        page.buttons["Open"].click()

    out = tmp_path / "export.json"
    page.choose_export_path = lambda stem: str(out)
    page.buttons["Export…"].click()
    qtbot.waitUntil(lambda: out.exists(), timeout=20_000)
    assert sorted(r["run"]["id"] for r in json.loads(out.read_text())["runs"]) == sorted(ids)

    page.select_ids([ids[1]])
    page.confirm = lambda text: False  # the user says no: nothing goes
    page.buttons["Delete…"].click()
    with db.begin() as session:
        assert count_runs(session) == 2
    page.confirm = lambda text: True
    page.buttons["Delete…"].click()
    with db.begin() as session:
        assert count_runs(session) == 1
    assert [r.id for r in page.model.rows] == [ids[0]]


def test_thousands_of_runs_load_page_by_page(qtbot, tmp_path):
    from core.persistence.runs import create_run

    db = Database.open(f"sqlite:///{tmp_path / 'many.db'}")
    with db.begin() as session:
        for i in range(1200):
            create_run(session, experiment_name=f"run-{i}", config={})
    page = RunsPage(db)
    qtbot.addWidget(page)
    assert page.model.total == 1200 and page.model.rowCount() == 200
    while page.model.canFetchMore():
        page.model.fetchMore()
    assert page.model.rowCount() == 1200
    db.close()


def test_overlay_a_federated_server_run_with_a_centralized_run(qtbot, trained_db):
    from core.events import RoundMetrics, TrainingEnd, TrainingStart
    from core.persistence import DatabaseSink
    from core.persistence.runs import create_run, delete_run

    db, ids = trained_db
    with db.begin() as session:
        server_id = create_run(session, experiment_name="fed", training_mode="federated", role="server", config={})
    sink = DatabaseSink(db, server_id)
    sink.handle(TrainingStart(run_id=server_id, experiment_name="fed", training_mode="federated", role="server"))
    for number, recall in ((0, 0.2), (1, 0.7), (2, 0.9)):
        sites = {"train_loss": 1.0 / (number + 1), "val_recall": 0.5} if number else {}
        sink.handle(
            RoundMetrics(
                run_id=server_id,
                round_number=number,
                server_metrics={"val_recall": recall},
                aggregated_client_metrics=sites,
            )
        )
    sink.handle(TrainingEnd(run_id=server_id, status="completed", best_epoch=2, best_val_recall=0.9))
    sink.close()
    try:
        view = CompareView(db, [ids[0], server_id])
        qtbot.addWidget(view)
        view.metric.setCurrentText("val_recall")
        steps, values = view.curves[server_id].getData()
        assert list(steps) == [0, 1, 2] and list(values) == pytest.approx([0.2, 0.7, 0.9])
        assert len(view.curves[ids[0]].getData()[1]) == 2  # the centralized run's epochs, on the same chart
        with db.begin() as session:  # opening the server run: per-round server evaluation and the sites' loss
            history = load_run_history(session, server_id)
        steps, values = history.epoch_series["val_recall"]
        assert list(steps) == [0, 1, 2] and list(values) == pytest.approx(
            [0.2, 0.7, 0.9]
        )  # the server's, not the sites'
        assert list(history.epoch_series["train_loss"][0]) == [1, 2]
    finally:
        with db.begin() as session:
            delete_run(session, server_id)


def test_final_statistics_fit_the_run_tab_and_legends_never_cover_curves(qtbot, trained_db):
    db, ids = trained_db
    viewer = RunViewer(db, ids[0])
    qtbot.addWidget(viewer)
    viewer.resize(1600, 1000)
    viewer.show()
    qtbot.waitUntil(lambda: viewer.full_loaded, timeout=20_000)
    qtbot.wait(50)
    panel = viewer.stats
    assert panel.horizontalScrollBar().maximum() == 0  # nothing to scroll sideways
    for table in (panel.metrics, panel.points):
        assert table.isVisible()
        shown = table.viewport().width()
        assert sum(table.columnWidth(c) for c in range(table.columnCount())) <= shown + 1
        for col in range(table.columnCount()):  # every cell's text fits its column
            for row in range(table.rowCount()):
                width = table.fontMetrics().horizontalAdvance(panel.cell(table, row, col))
                assert width <= table.columnWidth(col), (row, col, panel.cell(table, row, col))
    assert (
        panel.cell(panel.points, 0, 0) == f"{viewer.history.final_stats['operating_points']['youden']['threshold']:.3f}"
    )
    dashboard = viewer.dashboard
    for plot in (*dashboard.epoch_plots.values(), dashboard.grad_plot):
        view = plot.vb.sceneBoundingRect()
        for legend in (dashboard.grad_plot.legend, dashboard.epoch_plots["loss"].legend):
            assert not legend.sceneBoundingRect().intersects(view)
    assert len(dashboard.grad_plot.legend.items) >= 2  # the layers are named under the chart


def test_a_run_whose_every_epoch_calls_one_class_is_flagged(qtbot, tmp_path):
    from core.persistence.runs import create_run, finish_run

    db = Database.open(f"sqlite:///{tmp_path / 'one-class.db'}")
    try:
        metrics = {"recall": 1.0, "specificity": 0.0, "auroc": 0.5, "cm_tp": 10, "cm_fp": 8, "cm_tn": 0, "cm_fn": 0}
        with db.begin() as session:
            run_id = create_run(session, experiment_name="flat", config={})
            finish_run(session, run_id, status="completed", final_stats={"val": metrics, "degenerate": True})
        viewer = RunViewer(db, run_id)
        qtbot.addWidget(viewer)
        viewer.show()
        assert viewer.stats.warning.isVisible() and "not usable" in viewer.stats.warning.text()
        assert not viewer.read_button.isEnabled()
    finally:
        db.close()


def test_a_federation_server_run_opens_with_its_rounds_sites_failures_and_privacy(qtbot, tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 'fed.db'}")
    try:
        run_id = record_federation(db)
        viewer = RunViewer(db, run_id)
        qtbot.addWidget(viewer)
        board = viewer.federation
        assert board.isVisibleTo(viewer) and not viewer.dashboard.isVisibleTo(viewer)
        board.refresh()
        rounds, auroc = board.curve("val_auroc")
        assert rounds == [1.0, 2.0] and auroc == pytest.approx([0.85, 0.9])
        assert board.heatmap_sites() == ["north", "south"]
        assert board.cross_site[("north", 2)] == pytest.approx(0.9)
        assert not any(board.is_empty(chart) for chart in ("server", "heatmap", "site"))
        assert board.heatmap_plot.getAxis("bottom").isVisible()
        assert board.server_legend.isVisible() and board.site_legend.isVisible()
        assert board.updates.rowCount() == 5
        failed = [r for r in range(5) if board.updates.item(r, STATUS_COLUMN).text().startswith("FAILED")]
        assert len(failed) == 1 and "east" == board.updates.item(failed[0], 1).text()
        assert "offline" in board.updates.item(failed[0], STATUS_COLUMN).text()
        assert "ε = 2.00" not in board.privacy.text() and "3.00" in board.privacy.text()  # after round 2
        assert "ε = 3.00" in viewer.stats.privacy.text()
        viewer.dashboard.stop_timer()
        board.shutdown()
    finally:
        db.close()


def test_an_empty_federation_view_says_so_instead_of_drawing_empty_axes(qtbot):
    board = FederationDashboard()
    qtbot.addWidget(board)
    board.refresh()
    assert all(board.is_empty(chart) for chart in ("server", "heatmap", "site"))
    assert board._notes["server"].textItem.toPlainText() == "No federation yet"
    assert not board.server_legend.isVisible() and not board.site_legend.isVisible()  # no key before any data
    for plot in (board.server_plot, board.heatmap_plot, board.site_plot):  # no -400..400 "round (x0.001)" axes
        assert not plot.getAxis("bottom").isVisible() and not plot.getAxis("left").isVisible()
