"""*From PACS* on the Read images page, with real widgets against a real Orthanc: search, choose, read the study as
it is retrieved, *Send results to PACS*; the retrieved study leaves the private cache when the page is cleared."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from core.federated.processes import free_port
from core.pacs.nodes import DEFAULT_MOVE_PORT, PacsNode, PacsSettings, load_settings, save_settings, settings_file
from core.persistence import Database
from core.persistence.predictions import list_predictions
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
        page = ReadingPage(db)
        qtbot.addWidget(page)
        page.show()
        page.from_pacs()  # no model yet: nothing could read the study
        assert page.pacs_dialog is None and "Choose a model first" in page.banner.text()

        data = write_folder_dataset(tmp_path / "xrays", per_class=12, size=32)
        config = tiny_gui_config(data).with_overrides(backbone="small_cnn", epochs=1)
        run = train_and_record(config, db, work_dir=tmp_path / "ckpt")
        study = generate_uid()
        for n in range(2):
            orthanc.upload(chest_image(tmp_path / f"{n}.dcm", study_uid=study, patient_id="PID-77", seed=n))
        save_settings(PacsSettings({"main": PacsNode("main", ORTHANC_AE, "127.0.0.1", orthanc.dicom_port)}))
        assert settings_file().is_relative_to(user_folders)
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
        dialog.choose()  # the page retrieves the study and reads each image as it arrives
        assert not dialog.isVisible() and page.reading and page.progress.isVisible()
        folder = page.pacs_folder  # known from the start, so closing the app mid-way empties it
        assert folder is not None and folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700
        qtbot.waitUntil(lambda: not page.reading, timeout=60_000)
        assert len(page.readings) == 2 and all(r.probability is not None for r in page.readings)
        assert page.progress.maximum() == 2 and "2 image(s) read with" in page.banner.text()
        assert page.images_label.text() == "2 image(s) of a study from PACS main."
        with db.begin() as session:
            assert len(list_predictions(session)) == 2  # recorded, as images read from files are

        assert page.send_button.isEnabled()
        page.send_to_pacs()
        qtbot.waitUntil(lambda: page.send_button.isEnabled(), timeout=60_000)
        assert "Sent 4 DICOM object(s) (2 reports, 2 heatmaps) to PACS main" in page.banner.text()
        assert sorted(d.Modality for d in orthanc.instances(study)) == ["CR", "CR", "OT", "OT", "SR", "SR"]

        page.clear()  # the retrieved images leave the cache
        assert not folder.exists() and not page.send_button.isEnabled()

        # A C-MOVE the PACS cannot deliver (it has us at a port nobody listens on): one sentence on the page, which
        # stays usable; the failed retrieval leaves nothing in the cache.
        mover = PacsNode("main", ORTHANC_AE, "127.0.0.1", orthanc.dicom_port, retrieve="move")
        save_settings(PacsSettings({"main": mover}, move_port=free_port()))  # where we listen: not where it sends
        orthanc.send_moves_to(free_port())
        page.from_pacs()
        dialog = page.pacs_dialog
        dialog.patient.setText("PID-77")
        dialog.search()
        qtbot.waitUntil(lambda: not dialog.busy, timeout=30_000)
        dialog.choose()
        folder = page.pacs_folder
        qtbot.waitUntil(lambda: not page.reading, timeout=60_000)
        assert "could not send study" in page.banner.text() and "or retrieve with C-GET" in page.banner.text()
        assert page.readings == [] and not page.send_button.isEnabled() and page.read_button.isEnabled()
        assert folder is not None and not folder.exists()
    finally:
        orthanc.send_moves_to(DEFAULT_MOVE_PORT)  # as the module's Orthanc started
        db.close()


def test_preferences_add_test_change_and_save_pacs_nodes(qtbot, orthanc: Orthanc, user_folders, tmp_path):
    from desktop.gui.preferences import PreferencesDialog
    from desktop.settings import Settings

    settings = Settings(db_url=f"sqlite:///{tmp_path / 'runs.db'}")
    dialog = PreferencesDialog(settings)
    qtbot.addWidget(dialog)
    dialog.show()
    panel = dialog.pacs
    assert panel.table.rowCount() == 0 and not panel.test_button.isEnabled()

    panel.add_node()
    node_dialog = panel.node_dialog
    assert node_dialog is not None
    node_dialog.name.setText("main")
    node_dialog.ae_title.setText("ORTHANC\\1")  # a backslash is no AE title: a sentence, the dialog stays
    node_dialog.host.setText("127.0.0.1")
    node_dialog.port.setValue(orthanc.dicom_port)
    node_dialog.accept()
    assert node_dialog.isVisible() and "an AE title is 1 to 16 printable characters" in node_dialog.banner.text()
    node_dialog.ae_title.setText(ORTHANC_AE)
    node_dialog.tls["tls_ca"].setText(str(tmp_path / "missing-ca.pem"))
    node_dialog.accept()
    assert "--tls-ca" in node_dialog.banner.text() and "does not exist" in node_dialog.banner.text()
    node_dialog.tls["tls_ca"].setText("")
    node_dialog.accept()
    assert not node_dialog.isVisible() and panel.table.rowCount() == 1
    assert panel.table.item(0, 1).text() == f"{ORTHANC_AE}@127.0.0.1:{orthanc.dicom_port}"

    panel.test_button.click()
    qtbot.waitUntil(lambda: "answered" in panel.result.text() or "PACS main" in panel.result.text(), timeout=20_000)
    assert "answered and accepts PNEUMOFL" in panel.result.text()

    panel.edit_node()  # the same PACS under an AE title Orthanc does not know for us
    panel.node_dialog.our_ae.setText("STRANGER")
    panel.node_dialog.retrieve.setCurrentIndex(1)
    panel.node_dialog.accept()
    assert panel.table.item(0, 3).text() == "C-MOVE"
    panel.test_button.click()
    qtbot.waitUntil(lambda: panel.test_button.isEnabled(), timeout=20_000)
    assert "does not know our AE title STRANGER" in panel.result.text()

    panel.uid_root.setText("1.2.x")  # not a UID root: Save says so and keeps the dialog open
    dialog.accept()
    assert dialog.isVisible() and "UID root '1.2.x'" in dialog.error.text()
    panel.uid_root.setText("1.2.826.0.1.3680043.10.1234")
    panel.move_port.setValue(11113)
    dialog.accept()
    assert not dialog.isVisible()
    saved = load_settings()
    assert saved.nodes["main"].our_ae == "STRANGER" and saved.nodes["main"].retrieve == "move"
    assert (saved.uid_root, saved.move_port) == ("1.2.826.0.1.3680043.10.1234.", 11113)
    assert (settings_file().stat().st_mode & 0o777) == 0o600

    again = PreferencesDialog(settings)  # what was saved is what the next Preferences shows
    qtbot.addWidget(again)
    assert again.pacs.table.rowCount() == 1 and again.pacs.move_port.value() == 11113
    again.pacs.table.selectRow(0)
    again.pacs.remove_node()
    again.accept()
    assert load_settings().nodes == {}


def test_preferences_leave_a_broken_pacs_file_as_it_is(qtbot, user_folders, tmp_path):
    from desktop.gui.preferences import PreferencesDialog
    from desktop.settings import Settings

    settings_file().parent.mkdir(parents=True, exist_ok=True)
    settings_file().write_text("{not json", encoding="utf-8")
    dialog = PreferencesDialog(Settings(db_url=f"sqlite:///{tmp_path / 'runs.db'}"))
    qtbot.addWidget(dialog)
    assert "pacs.json is not valid PACS settings" in dialog.error.text() and not dialog.pacs.isEnabled()
    dialog.accept()  # the database part still saves; the broken file is not overwritten
    assert settings_file().read_text(encoding="utf-8") == "{not json"
