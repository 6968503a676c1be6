"""The Audit trail page: recorded entries newest first, Verify on an intact and an edited trail, the export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from core.audit import kinds, record
from core.persistence import Database
from desktop.gui.audit_page import AuditPage
from desktop.gui.main_window import MainWindow
from desktop.settings import Settings


@pytest.fixture
def trail(tmp_path: Path):
    db = Database.open(f"sqlite:///{tmp_path / 'audit.db'}")
    record(db, kinds.SITE_JOINED, {"site": "north", "server": "fl.example.org:9092"})
    record(db, kinds.PLAN_APPROVED, {"site": "north", "flower_run_id": 7, "reason": "Approved at the site."})
    record(db, kinds.IMAGES_READ, {"count": 3, "model": "run 4"})
    yield db
    db.close()


def shown_page(qtbot, db: Database) -> AuditPage:
    page = AuditPage(db)
    qtbot.addWidget(page)
    page.show()
    return page


def column(page: AuditPage, index: int) -> list[str]:
    return [page.table.item(row, index).text() for row in range(page.table.rowCount())]


def test_entries_are_listed_newest_first(qtbot, trail):
    page = shown_page(qtbot, trail)
    page.refresh()
    qtbot.waitUntil(lambda: page.table.rowCount() == 3, timeout=10_000)
    assert column(page, 0) == ["3", "2", "1"]
    assert column(page, 3) == [kinds.IMAGES_READ, kinds.PLAN_APPROVED, kinds.SITE_JOINED]
    assert column(page, 4)[2] == "site=north, server=fl.example.org:9092"
    assert "flower_run_id=7" in column(page, 4)[1]
    assert all(user for user in column(page, 2))
    assert page.summary.text() == "3 audit entries."


def test_verify_says_intact_then_names_the_edited_entry(qtbot, trail, tmp_path):
    page = shown_page(qtbot, trail)
    page.verify()
    qtbot.waitUntil(lambda: page.banner.text() != "", timeout=10_000)
    assert page.banner.text() == "Audit trail intact: 3 entries." and page.banner.kind == "info"

    with trail.engine.begin() as connection:
        connection.execute(text("""UPDATE audit_entries SET details = '{"site": "south"}' WHERE seq = 2"""))
    page.banner.hide()
    page.verify()
    qtbot.waitUntil(lambda: page.banner.text() != "", timeout=10_000)
    assert page.banner.text().startswith("Entry 2 (plan_approved, recorded ")
    assert "was altered" in page.banner.text() and page.banner.kind == "error"
    assert page.verify_button.isEnabled()


def test_export_writes_every_entry(qtbot, trail, tmp_path):
    page = shown_page(qtbot, trail)
    target = tmp_path / "trail.jsonl"
    page.export(target)
    qtbot.waitUntil(lambda: page.banner.text() != "", timeout=10_000)
    assert page.banner.text() == f"Exported 3 audit entries to {target}."
    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3] and lines[0]["details"]["site"] == "north"
    page.banner.hide()
    page.export(tmp_path / "missing-folder" / "trail.jsonl")
    qtbot.waitUntil(lambda: page.banner.text() != "", timeout=10_000)
    assert page.banner.text().startswith("Export failed: Cannot write") and "Traceback" not in page.banner.text()


def test_the_main_window_reads_the_trail_when_its_tab_is_shown(qtbot, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'app.db'}"
    with Database.open(db_url) as db:
        record(db, kinds.TOKEN_ROTATED, {"token": "sharing"})
    window = MainWindow(Settings(db_url=db_url), persist_settings=False)
    qtbot.addWidget(window)
    window.show()
    assert window.audit_page.table.rowCount() == 0  # nothing is read at start-up
    window.tabs.setCurrentWidget(window.audit_page)
    qtbot.waitUntil(lambda: window.audit_page.table.rowCount() == 1, timeout=10_000)
    assert window.tabs.tabText(window.tabs.indexOf(window.audit_page)) == "Audit trail"
    assert column(window.audit_page, 3) == [kinds.TOKEN_ROTATED]
    window.training_page.dashboard.stop_timer()
