"""The Read images page with real widgets, a real trained run and real images."""

from __future__ import annotations

import csv
import itertools
import time

import pytest
from PySide6.QtCore import QTimer

from core.export.exporter import export_model
from core.persistence import Database
from core.persistence.predictions import list_predictions
from core.training.recorded import train_and_record
from desktop.gui.reading_page import ReadingPage
from tests.desktop.conftest import tiny_gui_config
from tests.imaging import write_folder_dataset


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reading")
    data = write_folder_dataset(folder / "xrays", per_class=16, size=32)
    db = Database.open(f"sqlite:///{folder / 'runs.db'}")
    config = tiny_gui_config(data).with_overrides(backbone="small_cnn", epochs=3, learning_rate=3e-3)
    result = train_and_record(config, db, work_dir=folder / "ckpt")
    assert result.status == "completed", result.error
    yield db, result, data
    db.close()


def _read(qtbot, page, timeout=60_000):
    page.start_or_cancel()
    qtbot.waitUntil(lambda: not page.reading, timeout=timeout)


def test_read_a_folder_switch_the_operating_point_toggle_the_heatmap_and_export(qtbot, trained_run, tmp_path):
    db, result, data = trained_run
    page = ReadingPage(db)
    qtbot.addWidget(page)
    page.resize(1400, 900)
    page.show()
    page.select_run(result.run_id)
    page.add_paths([data / "PNEUMONIA", data / "NORMAL"])
    assert page.images_label.text() == "32 image(s) chosen."
    _read(qtbot, page)
    assert page.table.rowCount() == 32 and all(r.probability is not None for r in page.readings)
    youden = result.final_stats["operating_points"]["youden"]["threshold"]
    assert {r.threshold for r in page.readings} == {youden}
    assert page.table.item(0, 2).text() == page.readings[0].decision

    # Another operating point re-decides every image at its threshold, without reading them again.
    probabilities = [r.probability for r in page.readings]
    page.point.setCurrentIndex(page.point.findData("sens95"))
    sens95 = result.final_stats["operating_points"]["sens95"]["threshold"]
    assert [r.probability for r in page.readings] == probabilities
    for row, reading in enumerate(page.readings):
        expected = "PNEUMONIA" if reading.probability > sens95 else "NORMAL"
        assert reading.decision == expected == page.table.item(row, 2).text()
    assert page.threshold_label.text() == f"threshold {sens95:.3f}"
    page.point.setCurrentIndex(page.point.findData("manual"))
    page.manual.setValue(0.999)
    assert {page.table.item(r, 2).text() for r in range(32)} <= {"NORMAL", "PNEUMONIA"}
    assert all(r.decision == ("PNEUMONIA" if r.probability > 0.999 else "NORMAL") for r in page.readings)

    # The heatmap is drawn over the image, and off shows the plain X-ray.
    page.show_reading(3)
    with_heat = page.view.shown.copy()
    page.view.opacity.setValue(90)
    stronger = page.view.shown.copy()
    page.view.show_heatmap.setChecked(False)
    plain = page.view.shown.copy()
    assert with_heat != plain and stronger != with_heat
    assert plain.pixelColor(10, 10).red() == plain.pixelColor(10, 10).blue()  # grey: no tint left
    page.next_button.click()
    assert page.current == 4 and page.table.currentRow() == 4
    page.previous_button.click()
    assert page.current == 3

    target = tmp_path / "readings.csv"
    page.choose_csv_path = lambda: str(target)
    page.export_csv()
    rows = list(csv.DictReader(target.open()))
    assert len(rows) == 32 and {r["operating_point"] for r in rows} == {"manual"}
    assert [r["decision"] for r in rows] == [r.decision for r in page.readings]
    with db.begin() as session:
        recorded = list_predictions(session, run_id=result.run_id, limit=10_000)
    # Read at Youden, then shown at sens95, 0.5 (on switching to manual) and 0.999: each view is recorded.
    assert len(recorded) >= 32 * 3 and {"youden", "sens95", "manual"} <= {r["operating_point"] for r in recorded}


def test_an_exported_onnx_model_reads_the_same_and_says_it_has_no_heatmaps(qtbot, trained_run, tmp_path):
    db, result, data = trained_run
    exported = export_model(db, result.run_id, "onnx", tmp_path)
    page = ReadingPage(db)
    qtbot.addWidget(page)
    page.add_paths([data / "PNEUMONIA"])
    page.select_run(result.run_id)
    _read(qtbot, page)
    by_run = [r.probability for r in page.readings]
    page.choose_model = lambda: str(exported.model_file)
    page.choose_model_file()
    assert page.model_choice.currentText() == f"File: {exported.model_file.name}"
    _read(qtbot, page)
    assert max(abs(a - r.probability) for a, r in zip(by_run, page.readings)) <= 1e-4
    assert "shows no heatmaps" in page.banner.message.text()
    assert not page.view.show_heatmap.isEnabled()


def test_bad_choices_get_a_sentence_and_nothing_breaks(qtbot, trained_run, tmp_path):
    db, _, data = trained_run
    page = ReadingPage(db)
    qtbot.addWidget(page)
    page.start_or_cancel()
    assert "Choose the images" in page.banner.message.text()
    page.add_paths([tmp_path / "missing"])
    assert str(tmp_path / "missing") in page.banner.message.text() and page.paths == []
    (tmp_path / "model.onnx").write_bytes(b"junk")
    page.choose_model = lambda: str(tmp_path / "model.onnx")
    page.choose_model_file()
    page.add_paths([data / "NORMAL"])
    _read(qtbot, page)
    assert "model card" in page.banner.message.text() and page.readings == []
    page.select_run(99999)
    assert "Run 99999" in page.banner.message.text()


def test_the_window_stays_live_while_200_images_are_read(qtbot, trained_run, tmp_path):
    db, result, _ = trained_run
    many = write_folder_dataset(tmp_path / "many", per_class=100, size=64, seed=3)
    page = ReadingPage(db)
    qtbot.addWidget(page)
    page.show()
    page.select_run(result.run_id)
    page.add_paths([many])
    ticks: list[float] = []
    timer = QTimer(page)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    _read(qtbot, page, timeout=120_000)
    timer.stop()
    assert len(page.readings) == 200 and all(r.heatmap is not None for r in page.readings)
    assert page.batches_received >= 200 // 16  # the table filled in as the reading went
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert ticks and max(gaps) < 1.0, f"the window froze for {max(gaps):.2f} s"
