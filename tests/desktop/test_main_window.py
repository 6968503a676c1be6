"""The whole application: start-up with a bad database, closing during training or reading, a live-repaint soak."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from core.events import BatchMetrics, EpochEnd, GradientStats
from core.persistence import Database
from core.persistence.predictions import list_predictions
from core.persistence.runs import get_run, list_runs
from core.training.recorded import train_and_record
from desktop.charts.dashboard import RunDashboard
from desktop.gui.main_window import MainWindow
from desktop.settings import Settings, load_settings, save_settings
from tests.desktop.conftest import tiny_gui_config
from tests.imaging import write_folder_dataset

ROOT = Path(__file__).parents[2]


def test_unreachable_database_is_a_sentence_and_the_app_keeps_running(qtbot):
    window = MainWindow(Settings(db_url="postgresql+psycopg://u:pw@127.0.0.1:9/nothing"), persist_settings=False)
    qtbot.addWidget(window)
    window.show()
    assert "127.0.0.1" in window.banner.text() and "Preferences" in window.banner.text()
    assert "pw" not in window.banner.text()
    assert window.runs_page.model.rowCount() == 0
    window.tabs.setCurrentWidget(window.runs_page)  # still usable
    window.training_page.dashboard.stop_timer()


def test_closing_the_app_empties_a_retrieved_study_from_the_cache(qtbot, tmp_path, monkeypatch):
    from core.pacs.study import retrieval_folder

    for name in ("CONFIG", "CACHE"):
        monkeypatch.setenv(f"XDG_{name}_HOME", str(tmp_path / name.lower()))
    window = MainWindow(Settings(db_url=f"sqlite:///{tmp_path / 'runs.db'}"), persist_settings=False)
    qtbot.addWidget(window)
    folder = retrieval_folder()  # as From PACS… leaves it while its readings are on screen
    (folder / "1.2.3.dcm").write_bytes(b"DICM")
    window.reading_page.pacs_folder = folder
    window.close()
    assert not folder.exists()


def test_broken_settings_file_falls_back_with_a_warning(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("{broken")
    settings, warning = load_settings(path)
    assert settings == Settings() and str(path) in warning
    save_settings(Settings(db_url="sqlite:///x.db", training={"epochs": 3}), path)
    again, warning = load_settings(path)
    assert warning is None and again.db_url == "sqlite:///x.db" and again.run_config().epochs == 3
    path.write_text(json.dumps({"version": 1, "database": "sqlite:///old.db"}))  # v1 file: migrated
    assert load_settings(path)[0].db_url == "sqlite:///old.db"


@pytest.mark.full  # starts the app as a subprocess
def test_closing_the_window_during_training_records_the_run_and_exits_0(tmp_path, gui_dataset):
    db_url = f"sqlite:///{tmp_path / 'close.db'}"
    script = textwrap.dedent(f"""
        import sys
        from PySide6.QtCore import QTimer
        from desktop.app import run_app

        def drive(window):
            page = window.training_page
            page.set_data_path({str(gui_dataset)!r})
            page.epochs.setValue(500)
            page.image_size.setValue(32)
            page.batch_size.setValue(8)
            page.start()
            timer = QTimer(window)
            def poll():
                if page.dashboard.store["val_recall"].last() is not None:
                    timer.stop()
                    window.close()
            timer.timeout.connect(poll)
            timer.start(50)

        sys.exit(run_app({db_url!r}, on_window=drive))
    """)
    _run_app(script, tmp_path)
    db = Database.open(db_url)
    with db.begin() as session:
        runs = list_runs(session)
        assert len(runs) == 1
        run = get_run(session, runs[0].id)
    db.close()
    assert run.status == "cancelled" and run.end_time is not None


@pytest.mark.full  # starts the app as a subprocess
def test_closing_the_window_while_images_are_read_keeps_what_was_read_and_exits_0(tmp_path, gui_dataset):
    db_url = f"sqlite:///{tmp_path / 'read.db'}"
    with Database.open(db_url) as db:
        run_id = train_and_record(tiny_gui_config(gui_dataset).with_overrides(epochs=1), db, work_dir=tmp_path).run_id
    images = write_folder_dataset(tmp_path / "to-read", per_class=150, size=64)
    script = textwrap.dedent(f"""
        import sys
        from PySide6.QtCore import QTimer
        from desktop.app import run_app

        def drive(window):
            page = window.reading_page
            page.select_run({run_id})
            page.add_paths([{str(images)!r}])
            page.start_or_cancel()
            timer = QTimer(window)
            def poll():  # close once the first readings are in, with most images still to read
                if page.batches_received:
                    timer.stop()
                    print("closing after", len(page.readings), "of", len(page.paths), flush=True)
                    window.close()
            timer.timeout.connect(poll)
            timer.start(20)

        sys.exit(run_app({db_url!r}, on_window=drive))
    """)
    proc = _run_app(script, tmp_path)
    # The reading thread used to outlive the window: Qt aborted the process (exit code 134) as it was destroyed.
    assert "closing after" in proc.stdout
    with Database.open(db_url) as db, db.begin() as session:
        recorded = len(list_predictions(session, limit=10_000))
    assert 0 < recorded < 300  # what was read before the window closed is recorded; the rest was cancelled


def _run_app(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``script`` (which drives ``run_app``) offscreen with its own user folders; it must exit 0, unaborted."""
    env = os.environ | {
        "QT_QPA_PLATFORM": "offscreen",
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Aborted" not in proc.stderr and "QThread: Destroyed" not in proc.stderr  # Qt 6.11 names the thread
    return proc


def test_a_thousand_live_repaints_soak(qtbot):
    """Guards the PySide6 6.12.0/CPython 3.11 crash after ~100 pyqtgraph repaints (DESIGN.md)."""
    dashboard = RunDashboard(refresh_hz=1)  # repaint by hand below, deterministically
    qtbot.addWidget(dashboard)
    dashboard.show()
    rng = np.random.default_rng(0)
    step = 0
    for i in range(1000):
        step += 1
        dashboard.handle_event(BatchMetrics(epoch=i // 50 + 1, step=step, metrics={"train_loss": float(rng.random())}))
        dashboard.handle_event(GradientStats(step=step, global_norm=1.0, layer_norms={"a": 0.5, "b": 0.2}))
        if i % 50 == 49:
            metrics = {f"{s}_{m}": float(rng.random()) for s in ("train", "val") for m in ("loss", "recall", "auroc")}
            metrics |= {"val_cm_tp": 5.0, "val_cm_fp": 1.0, "val_cm_tn": 4.0, "val_cm_fn": 0.0}
            dashboard.handle_event(
                EpochEnd(
                    epoch=i // 50 + 1, metrics=metrics, curves={"val_roc": {"fpr": [0, 0.5, 1], "tpr": [0, 0.9, 1]}}
                )
            )
        dashboard.refresh()
        dashboard.plots.repaint()
        qtbot.wait(0)
    assert dashboard.repaints == 1000
    xs, ys = dashboard.curve_data("batch/train_loss")
    assert len(xs) == 1000 and xs[-1] == 1000 and np.all((ys >= 0) & (ys < 1))
    assert dashboard.cm_view.values == {"tp": 5.0, "fp": 1.0, "tn": 4.0, "fn": 0.0}
    dashboard.stop_timer()
