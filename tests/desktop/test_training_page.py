"""The Training page with real widgets, a real QThread and a real SQLite database."""

import numpy as np
import pytest
from PySide6.QtCore import Qt

from core.events import EpochEnd
from core.persistence import Database
from core.persistence.history import load_run_history
from core.persistence.runs import get_run
from desktop.gui.runs_page import RunsPage
from desktop.gui.training_page import TrainingPage


@pytest.fixture
def page(qtbot, sqlite_url, gui_config):
    widget = TrainingPage(sqlite_url, gui_config)
    widget.set_data_path(gui_config.data_path)
    qtbot.addWidget(widget)
    widget.show()
    yield widget
    widget.stop_and_wait()
    widget.dashboard.stop_timer()


def wait_finished(qtbot, page, timeout=120_000):
    qtbot.waitUntil(lambda: page.last_result is not None and not page.running, timeout=timeout)
    return page.last_result


def test_start_trains_and_charts_hold_exactly_what_the_database_recorded(qtbot, page, sqlite_url):
    page.start()
    result = wait_finished(qtbot, page)
    assert result.status == "completed", result.error
    page.dashboard.refresh()
    db = Database.open(sqlite_url)
    with db.begin() as session:
        history = load_run_history(session, result.run_id)
    db.close()
    for name in ("train_loss", "val_loss", "val_recall", "val_specificity", "val_auroc", "train_f1"):
        xs, ys = page.dashboard.curve_data(name)
        np.testing.assert_array_equal(xs, history.epoch_series[name][0])
        np.testing.assert_allclose(ys, history.epoch_series[name][1], rtol=1e-12)
    xs, ys = page.dashboard.curve_data("batch/train_loss")
    np.testing.assert_array_equal(xs, history.batch_series["train_loss"][0])
    np.testing.assert_allclose(ys, history.batch_series["train_loss"][1], rtol=1e-12)
    xs, ys = page.dashboard.curve_data("grad_norm")
    np.testing.assert_allclose(ys, history.batch_series["grad_norm"][1], rtol=1e-12)
    cm = page.dashboard.cm_view.values
    last = {k: history.epoch_series[f"val_cm_{k}"][1][-1] for k in ("tp", "fp", "tn", "fn")}
    assert cm == last
    assert page.progress.format() == "Completed" and page.progress.value() == 100
    assert "completed" in page.banner.text()


def test_stop_mid_run_is_quick_and_recorded_as_cancelled(qtbot, page, sqlite_url, gui_config):
    page.set_config(gui_config.with_overrides(epochs=50))
    page.start()
    qtbot.waitUntil(lambda: page.dashboard.store["val_recall"].last() is not None, timeout=120_000)
    page.stop()
    result = wait_finished(qtbot, page, timeout=10_000)
    assert result.status == "cancelled"
    db = Database.open(sqlite_url)
    with db.begin() as session:
        run = get_run(session, result.run_id)
        history = load_run_history(session, result.run_id)
    db.close()
    assert run.status == "cancelled"
    assert len(history.epoch_series["val_recall"][0]) == result.epochs_completed >= 1
    assert "stopped" in page.banner.text()


def test_resume_on_the_runs_page_continues_a_stopped_run_in_place_with_a_mark(qtbot, page, sqlite_url, gui_config):
    page.set_config(gui_config.with_overrides(epochs=4, backbone="small_cnn"))
    first_epoch_ended = []

    def stop_after_the_first_epoch(event: object) -> None:  # on the training thread, as the epoch ends
        # Stopping from the GUI once the first epoch is drawn raced the four tiny epochs (CI saw all four end).
        if isinstance(event, EpochEnd) and not first_epoch_ended:
            first_epoch_ended.append(event)
            page.worker.cancel()

    page.bridge.event.connect(stop_after_the_first_epoch, Qt.ConnectionType.DirectConnection)
    page.start()
    stopped = wait_finished(qtbot, page)
    assert stopped.status == "cancelled" and 1 <= stopped.epochs_completed < 4
    db = Database.open(sqlite_url)
    try:
        runs = RunsPage(db)
        qtbot.addWidget(runs)
        runs.show()
        runs.resume_requested.connect(page.resume_run)
        runs.select_ids([stopped.run_id])
        runs.buttons["Resume"].click()
        result = wait_finished(qtbot, page)
        assert result.status == "completed" and result.run_id == stopped.run_id, result.error
        page.dashboard.refresh()
        with db.begin() as session:
            history = load_run_history(session, result.run_id)
        xs, ys = page.dashboard.curve_data("val_loss")
        np.testing.assert_array_equal(xs, [1, 2, 3, 4])  # what was kept, then the resumed epochs
        np.testing.assert_allclose(ys, history.epoch_series["val_loss"][1], rtol=1e-12)
        assert page.dashboard.resume_epochs == [stopped.epochs_completed]
        marks = {line.value() for _, line in page.dashboard._resume_lines}
        assert marks == {stopped.epochs_completed + 0.5}
        assert f"resumed after epoch {stopped.epochs_completed}" in page.banner.text()

        runs.refresh()
        runs.select_ids([stopped.run_id])
        runs.buttons["Resume"].click()  # completed now: nothing to resume, and the page says so
        assert "is completed" in runs.banner.text() and not page.running
    finally:
        db.close()


def test_bad_dataset_shows_a_sentence_and_nothing_starts(qtbot, page, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    page.set_data_path(str(empty))
    page.start()
    qtbot.waitUntil(lambda: page.banner.isVisible(), timeout=30_000)
    assert "cannot be used" in page.banner.text() and str(empty) in page.summary.toPlainText()
    assert not page.running and page.start_button.isEnabled()
    assert "Traceback" not in page.banner.text()


def test_invalid_setting_is_named(qtbot, page):
    page.use_demo = False
    page.data_path.setText("")
    page.start()
    assert "data_path" in page.banner.text()
    assert not page.running


def test_a_crash_inside_training_is_shown_and_recorded_as_failed(qtbot, page, sqlite_url, gui_config, tmp_path):
    from core.data.prepare import prepare_dataset
    from tests.imaging import write_folder_dataset

    root = write_folder_dataset(tmp_path / "fragile", per_class=8, size=32)
    config = gui_config.with_overrides(data_path=str(root), cache_images=False)
    prepared = prepare_dataset(config)
    for image in root.rglob("*.png"):  # the images vanish between the check and the first batch
        image.unlink()
    page.start_prepared(config, prepared)
    result = wait_finished(qtbot, page)
    assert result.status == "failed"
    assert "Training failed" in page.banner.text() and "Traceback" not in page.banner.text()
    db = Database.open(sqlite_url)
    with db.begin() as session:
        run = get_run(session, result.run_id)
    db.close()
    assert run.status == "failed" and ".png" in (run.error_message or "")


def test_check_shows_progress_and_names_every_unusable_file(qtbot, page, tmp_path):
    from tests.core.dicom_factory import UNUSABLE, write_pacs_export

    root = write_pacs_export(tmp_path / "pacs")
    page.set_data_path(str(root))
    page.check_dataset()
    qtbot.waitUntil(lambda: page.check_button.text() == "Chec&k dataset", timeout=60_000)
    report = page.summary.toPlainText()
    assert page.progress.format() == "Dataset checked" and page.progress.value() == page.progress.maximum() == 48
    for name in UNUSABLE:
        assert sum(name in line for line in report.splitlines()) == 1, report
    # 4 of 48 is past the default 5 %: refused with the reason in the banner, the report behind Details.
    assert page.banner.isVisible() and "4 of 48 images" in page.banner.text()
    assert page.prepared is None and "Traceback" not in report


def test_a_running_check_can_be_cancelled(qtbot, page, tmp_path):
    from tests.core.data_helpers import make_folder_dataset

    root = make_folder_dataset(tmp_path / "big", {"": (400, 400)})
    page.set_data_path(str(root))
    page.check_dataset()
    assert page.check_button.text() == "Cancel chec&k"
    page.check_dataset()  # the same button, now "Cancel check"
    qtbot.waitUntil(lambda: page.check_button.text() == "Chec&k dataset", timeout=60_000)
    assert page.summary.toPlainText() == "The check was cancelled."
    assert page.progress.format() == "Check cancelled" and not page.banner.isVisible()
    assert page.prepared is None and page.start_button.isEnabled()
