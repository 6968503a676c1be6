"""The Federation page with real Flower processes: simulate, watch it live, stop by quitting; and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QTableWidgetItem

from core.persistence import Database
from core.persistence.runs import list_runs
from desktop.charts.federation import STATUS_COLUMN
from desktop.gui.certs_dialog import CertsDialog
from desktop.gui.federation_page import FederationPage
from desktop.gui.main_window import MainWindow
from desktop.settings import Settings
from tests.federation.conftest import processes_under
from tests.imaging import write_folder_dataset


@pytest.fixture(scope="module")
def split_data(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("fl-gui"), per_class=20, size=32, splits=True)


def small_plan(page: FederationPage, rounds: int) -> None:
    page.sim_sites.setValue(2)
    page.sim_plan.rounds.setValue(rounds)
    page.sim_plan.local_epochs.setValue(1)
    page.sim_plan.min_sites.setValue(2)
    # A site's first round starts its worker (torch, Lightning): on a loaded 2-core runner that alone has taken
    # most of a minute, so the round's bound leaves room; no test here is about the timeout itself.
    page.sim_plan.timeout.setValue(150)


@pytest.mark.full  # starts Flower or the CLI
def test_simulated_federation_is_drawn_live_and_recorded(qtbot, tmp_path, split_data):
    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    page = FederationPage(db_url, tmp_path / "work")
    qtbot.addWidget(page)
    small_plan(page, rounds=1)
    page.sim_data.setText(str(split_data))
    try:
        with qtbot.waitSignal(page.federation_finished, timeout=180_000) as finished:
            page.sim_button.click()
            assert not page.sim_button.isEnabled() and page.stop_button.isEnabled()
        outcome = finished.args[0]
        qtbot.waitUntil(lambda: page.dashboard.updates.rowCount() == 2, timeout=10_000)
        page.dashboard.refresh()
    finally:
        page.shutdown()

    table = page.dashboard.updates
    replies = [
        [(table.item(r, c) or QTableWidgetItem()).text() for c in (0, 1, STATUS_COLUMN)]
        for r in range(table.rowCount())
    ]
    assert outcome.status == "completed", (outcome.message, replies)  # each site's reason, when one failed
    assert "completed" in page.status.text()
    xs, ys = page.dashboard.curve("val_auroc")
    assert xs == [0.0, 1.0] and all(0.0 <= y <= 1.0 for y in ys)  # initial model, then round 1
    assert sorted(page.dashboard.sites) == ["site-1", "site-2"]
    statuses = [page.dashboard.updates.item(r, STATUS_COLUMN).text() for r in range(2)]
    assert statuses == ["ok", "ok"]
    # Cross-site evaluation: a heatmap cell per site for round 1 (the global model on each site's images).
    assert page.dashboard.heatmap_sites() == ["site-1", "site-2"]
    assert processes_under(tmp_path / "work") == []
    db = Database.open(db_url)
    try:
        with db.begin() as s:
            assert sorted(r.role for r in list_runs(s, limit=10)) == ["server", "site", "site"]
    finally:
        db.close()


@pytest.mark.full  # starts Flower or the CLI
def test_quitting_the_app_mid_federation_stops_every_process(qtbot, tmp_path, split_data):
    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    window = MainWindow(Settings(db_url=db_url), persist_settings=False)
    qtbot.addWidget(window)
    page = window.federation_page
    small_plan(page, rounds=20)
    page.sim_data.setText(str(split_data))
    page.simulate()
    qtbot.waitUntil(lambda: len(page.dashboard.site_names) >= 1, timeout=120_000)  # a site is training round 1
    work = page.work_root
    window.close()  # what File > Quit does

    assert processes_under(work) == [], "Flower processes outlived the app"
    db = Database.open(db_url)
    try:
        with db.begin() as s:
            server = [r for r in list_runs(s, limit=10) if r.role == "server"]
    finally:
        db.close()
    assert len(server) == 1 and server[0].status == "cancelled"
    assert all(r.status == "cancelled" for r in list_runs(s, limit=10) if r.role == "site")


def test_server_form_explains_what_is_missing(qtbot, tmp_path):
    page = FederationPage(f"sqlite:///{tmp_path / 'runs.db'}", tmp_path / "work")
    qtbot.addWidget(page)
    page.show()
    try:
        page.start_server()
        assert "evaluation images" in page.banner.text()
        page.server_form.eval_data.setText(str(tmp_path))
        page.start_server()
        assert "certificates folder" in page.banner.text()
        page.server_form.insecure.setChecked(True)
        page.start_server()
        assert "only listen on 127.0.0.1, not 0.0.0.0" in page.banner.text()
        page.server_form.listen.setText("nonsense")
        page.start_server()
        assert "HOST:PORT" in page.banner.text()
        page.join()
        assert "server address" in page.banner.text()
        page.join_form.server.setText("fl.example.org:9092")
        page.join_form.data.setText(str(tmp_path))
        page.join()
        assert "needs TLS" in page.banner.text() and "127.0.0.1" in page.banner.text()
        # The site's policy is read before anything starts: a bad file is its sentence in the banner.
        page.join_form.server.setText("127.0.0.1:9092")
        page.join_form.policy.setText(str(tmp_path / "missing.toml"))
        page.join()
        assert "missing.toml does not exist" in page.banner.text() and "site policy init" in page.banner.text()
        (tmp_path / "bad.toml").write_text("policy_version = 1\nmax_rounds = 'many'\n")
        page.join_form.policy.setText(str(tmp_path / "bad.toml"))
        page.join()
        assert "bad.toml" in page.banner.text() and "max_rounds" in page.banner.text()
        assert not page.running and page.join_button.isEnabled()
    finally:
        page.shutdown()


def test_certs_dialog_creates_material_and_says_what_goes_where(qtbot, tmp_path):
    dialog = CertsDialog()
    qtbot.addWidget(dialog)
    dialog.folder.setText(str(tmp_path / "fed"))
    dialog.create()
    assert "server" in dialog.error.text() and dialog.created is None
    dialog.hosts.setText("fl.example.org, 10.0.0.5")
    dialog.sites.setText("north, south")
    dialog.create()
    assert dialog.created is not None and (tmp_path / "fed" / "nodes" / "south.key").is_file()
    text = dialog.result.toPlainText()
    assert "Site north: give it ca.pem and north.key" in text and "fingerprint" in text
    dialog.create()  # again: refuses to overwrite, says how
    assert "--force" in dialog.error.text() or "another directory" in dialog.error.text()


@pytest.mark.full  # starts Flower
def test_resume_on_the_runs_page_restarts_an_interrupted_federations_server(qtbot, tmp_path, split_data):
    from core.federated.processes import free_port
    from core.federated.server_state import ServerState
    from core.federated.settings import FederationConfig
    from core.persistence.artifacts import put_artifact
    from core.persistence.runs import create_run, finish_run

    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    plan = FederationConfig(name="interrupted", rounds=4, min_sites=2)
    with Database.open(db_url) as db, db.begin() as s:
        config = plan.to_dict() | {"eval_data": str(split_data)}
        run_id = create_run(
            s, experiment_name="interrupted", training_mode="federated", role="server", config=config, flower_run_id=77
        )
        finish_run(s, run_id, status="interrupted")
    window = MainWindow(Settings(db_url=db_url), persist_settings=False)
    qtbot.addWidget(window)
    window.show()
    page, runs = window.federation_page, window.runs_page
    try:
        runs.refresh()
        runs.select_ids([run_id])
        runs.buttons["Resume"].click()
        assert window.tabs.currentWidget() is page
        assert "kept no state to continue from" in page.banner.text() and not page.running

        with Database.open(db_url) as db, db.begin() as s:  # the state its server kept after round 2
            put_artifact(s, run_id, "server_state", ServerState(2, {}).to_bytes())
        page.server_form.insecure.setChecked(True)
        page.server_form.listen.setText(f"127.0.0.1:{free_port()}")
        runs.buttons["Resume"].click()
        assert page.running and page.server is not None
        assert page.server.settings.resume_run_id == run_id
        assert page.server.state_file is not None and page.server.state_file.name.startswith("superlink-")
        qtbot.waitUntil(lambda: page.server.alive(), timeout=60_000)  # its SuperLink runs, waiting for the sites
    finally:
        page.shutdown()
    assert processes_under(page.work_root) == []
