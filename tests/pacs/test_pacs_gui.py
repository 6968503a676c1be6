"""*From PACS* on the Read images page, with real widgets against a real Orthanc: search, choose, retrieve, read,
*Send results to PACS*; the retrieved study leaves the private cache when the page is cleared."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from core.pacs.nodes import PacsNode, PacsSettings, save_settings, settings_file
from core.persistence import Database
from core.training.recorded import train_and_record
from desktop.gui.reading_page import ReadingPage
from tests.desktop.conftest import tiny_gui_config
from tests.imaging import write_folder_dataset
from tests.pacs.orthanc import ORTHANC_AE, Orthanc
from tests.pacs.studies import chest_image


@pytest.fixture
def user_folders(tmp_path, monkeypatch):
    for name in ("CONFIG", "DATA", "CACHE", "STATE"):
        monkeypatch.setenv(f"XDG_{name}_HOME", str(tmp_path / name.lower()))
    return tmp_path


def test_from_pacs_search_select_read_and_send_results(qtbot, orthanc: Orthanc, user_folders, tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        data = write_folder_dataset(tmp_path / "xrays", per_class=12, size=32)
        config = tiny_gui_config(data).with_overrides(backbone="small_cnn", epochs=1)
        run = train_and_record(config, db, work_dir=tmp_path / "ckpt")
        study = generate_uid()
        for n in range(2):
            orthanc.upload(chest_image(tmp_path / f"{n}.dcm", study_uid=study, patient_id="PID-77", seed=n))
        save_settings(PacsSettings({"main": PacsNode("main", ORTHANC_AE, "127.0.0.1", orthanc.dicom_port)}))
        assert settings_file().is_relative_to(user_folders)

        page = ReadingPage(db)
        qtbot.addWidget(page)
        page.show()
        page.select_run(run.run_id)
        page.from_pacs()
        dialog = page.pacs_dialog
        assert dialog is not None and dialog.node_choice.count() == 1
        dialog.date.setText("2026")  # not a date: a sentence, no query
        dialog.search()
        assert dialog.banner.isVisible() and "YYYYMMDD" in dialog.banner.text()
        dialog.date.setText("")
        dialog.patient.setText("PID-77")
        dialog.search()
        qtbot.waitUntil(lambda: not dialog.busy, timeout=30_000)
        assert dialog.table.rowCount() == 1 and dialog.table.item(0, 1).text() == "PID-77"
        dialog.retrieve()  # retrieves, then the page reads the study at once
        qtbot.waitUntil(lambda: bool(page.readings) and not page.reading, timeout=60_000)
        assert len(page.readings) == 2 and all(r.probability is not None for r in page.readings)
        assert "study from PACS main" in page.images_label.text()
        folder = page.pacs_folder
        assert folder is not None and folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700

        assert page.send_button.isEnabled()
        page.send_to_pacs()
        qtbot.waitUntil(lambda: page.send_button.isEnabled(), timeout=60_000)
        assert "Sent 4 DICOM object(s) (2 reports, 2 heatmaps) to PACS main" in page.banner.text()
        assert sorted(d.Modality for d in orthanc.instances(study)) == ["CR", "CR", "OT", "OT", "SR", "SR"]

        page.clear()  # the retrieved images leave the cache
        assert not folder.exists() and not page.send_button.isEnabled()
    finally:
        db.close()
