"""A site's consent in the app: the dialog a real plan question opens, its answers, and the site leaving on decline.

The question travels as it does in a federation, without starting Flower: what the site's ClientApp runs
(``ask_site_node``) writes a request to a real :class:`ConsentDesk`, whose thread decides, calling the page's
:class:`ConsentAsker`, and audits.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QWidget

from core.audit import entries, kinds
from core.federated.consent_channel import ask_site_node
from core.federated.policy import default_policy
from core.federated.settings import FederationConfig, SiteSettings
from core.federated.site_consent import ConsentDesk, PlanRecord, summarize
from core.federated.site_node import SiteNode
from core.persistence import Database
from desktop.gui.consent_dialog import TITLE, ConsentAsker, ConsentDialog
from desktop.gui.federation_page import FederationPage

SERVER = "127.0.0.1:9092"
PLAN = FederationConfig(name="pneumonia-2026", rounds=3, local_epochs=2, dp_noise=2.0)
SENT = FederationConfig.from_run_config(PLAN.run_config())  # the plan as a site receives it (Flower's run config)


@pytest.fixture
def site_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'site.db'}"
    Database.open(url).close()  # migrated, as a joined site's database is
    return url


def site_settings(db_url: str, consent: Path) -> SiteSettings:
    return SiteSettings(
        site_name="north", data_path=str(consent.parent), db_url=db_url, server_address=SERVER, consent_dir=str(consent)
    )


class Question:
    """The plan question in a thread of its own, as the site's ClientApp asks it; ``record`` is the site's answer."""

    def __init__(self, site: SiteSettings, flower_run_id: int = 7) -> None:
        self.record: PlanRecord | None = None
        self.thread = threading.Thread(target=self._run, args=(site, flower_run_id), daemon=True)
        self.thread.start()

    def _run(self, site: SiteSettings, flower_run_id: int) -> None:
        approved, reason = ask_site_node(Path(site.consent_dir), flower_run_id, PLAN.run_config(), 60)
        self.record = PlanRecord(flower_run_id, "", approved, reason)

    def answered(self) -> bool:
        return not self.thread.is_alive()


def audited(db_url: str, kind: str) -> list[dict]:
    with Database.open(db_url, migrate=False) as db, db.begin() as session:
        return [entry.details for entry in entries(session, kinds=[kind])]


def open_dialog(qtbot, asker: ConsentAsker) -> ConsentDialog:
    qtbot.waitUntil(lambda: len(asker.dialogs()) == 1, timeout=20_000)
    return asker.dialogs()[0]


@pytest.fixture
def desk(qtbot, tmp_path: Path, site_db: str):
    parent = QWidget()
    qtbot.addWidget(parent)
    asker = ConsentAsker(parent)
    desk = ConsentDesk(site_settings(site_db, tmp_path / "consent"), asker)
    desk.start()
    yield asker, desk
    asker.close()
    desk.stop()


def test_the_dialog_shows_the_plan_and_approve_is_recorded(qtbot, site_db, tmp_path, desk):
    asker, consent = desk
    site = site_settings(site_db, consent.folder)
    question = Question(site)
    dialog = open_dialog(qtbot, asker)

    summary = summarize(SENT, site, default_policy())
    text = dialog.plan_text.toPlainText()
    assert dialog.windowTitle() == TITLE
    assert text.split("\n\n") == [line for line in summary.lines() if not line.startswith("Plan hash")]
    assert "Server 127.0.0.1:9092 on this machine" in text
    assert "Federation 'pneumonia-2026': 3 rounds of 2 local epochs" in text
    assert "the server will have spent epsilon 4.01" in text
    assert summary.plan_hash in dialog.hash_label.text()
    assert dialog.decline_button.isDefault() and not dialog.approve_button.isDefault()

    qtbot.mouseClick(dialog.approve_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(question.answered, timeout=20_000)
    assert question.record is not None and question.record.approved
    assert question.record.reason == "Approved at the site."
    approved = audited(site_db, kinds.PLAN_APPROVED)
    assert [(d["plan_sha256"], d["flower_run_id"], d["site"]) for d in approved] == [(summary.plan_hash, 7, "north")]
    assert asker.open_questions == 0


def test_decline_is_recorded(qtbot, site_db, desk):
    asker, consent = desk
    question = Question(site_settings(site_db, consent.folder))
    with qtbot.waitSignal(asker.answered, timeout=20_000) as answered:
        qtbot.mouseClick(open_dialog(qtbot, asker).decline_button, Qt.MouseButton.LeftButton)
    assert answered.args[0] == "decline"
    qtbot.waitUntil(question.answered, timeout=20_000)
    assert question.record is not None and not question.record.approved
    assert question.record.reason == "Declined at the site."
    assert [d["flower_run_id"] for d in audited(site_db, kinds.PLAN_DECLINED)] == [7]
    assert audited(site_db, kinds.PLAN_APPROVED) == []


def test_escape_declines_and_within_policy_approves_later_plans_unasked(qtbot, site_db, desk):
    asker, consent = desk
    site = site_settings(site_db, consent.folder)
    first = Question(site, flower_run_id=1)
    qtbot.keyClick(open_dialog(qtbot, asker), Qt.Key.Key_Escape)
    qtbot.waitUntil(first.answered, timeout=20_000)
    assert first.record is not None and not first.record.approved

    second = Question(site, flower_run_id=2)
    open_dialog(qtbot, asker).within_button.click()
    qtbot.waitUntil(second.answered, timeout=20_000)
    third = Question(site, flower_run_id=3)  # nobody is asked: the desk approves it within the policy
    qtbot.waitUntil(third.answered, timeout=20_000)
    assert second.record is not None and third.record is not None
    assert second.record.approved and third.record.approved and "within the site's policy" in third.record.reason
    assert [d["flower_run_id"] for d in audited(site_db, kinds.PLAN_APPROVED)] == [2, 3]


def site_page(qtbot, tmp_path: Path, db_url: str) -> tuple[FederationPage, SiteNode, list[bool]]:
    """A Federation page with a site joined as far as the consent goes: its real node, its SuperNode not started."""
    page = FederationPage(db_url, tmp_path / "work")
    qtbot.addWidget(page)
    page.show()
    page.site_timer.stop()  # no SuperNode runs, so the page must not notice one stopping
    site = SiteSettings(site_name="north", data_path=str(tmp_path), db_url=db_url, server_address=SERVER)
    node = SiteNode(
        site,
        SERVER,
        tmp_path / "node",
        asker=page.asker,
        on_notice=page.notices.say,
        on_decided=page.plan_decided.emit,
    )
    declined_when_stopped: list[bool] = []

    def stop() -> None:  # what SiteNode.stop does to the consent desk; and whether the decline was on record
        declined_when_stopped.append(bool(audited(db_url, kinds.PLAN_DECLINED)))
        node.desk.stop()

    node.stop = stop  # type: ignore[method-assign]
    node.desk = ConsentDesk(node.node_settings(), node._asker, node._on_decided)  # what start() makes
    node.desk.start()
    page.site = node
    page.stop_button.setEnabled(True)
    page.join_button.setEnabled(False)
    return page, node, declined_when_stopped


def test_declining_on_the_federation_page_leaves_the_federation(qtbot, tmp_path, site_db):
    page, node, declined_when_stopped = site_page(qtbot, tmp_path, site_db)
    try:
        question = Question(node.node_settings(), flower_run_id=11)
        dialog = open_dialog(qtbot, page.asker)
        assert dialog.parent() is page
        qtbot.mouseClick(dialog.decline_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: declined_when_stopped != [], timeout=30_000)
        assert declined_when_stopped == [True], "the site left before its decline was audited"
        assert page.banner.text() == f"Declined the plan of {SERVER}; this site left the federation."
        assert page.site is None and page.join_button.isEnabled() and not page.stop_button.isEnabled()
        assert page.status.text() == "Left the federation."
        qtbot.waitUntil(question.answered, timeout=20_000)
        assert question.record is not None and not question.record.approved
    finally:
        page.shutdown()


def test_a_question_open_when_the_page_closes_is_declined(qtbot, tmp_path, site_db):
    page, node, _ = site_page(qtbot, tmp_path, site_db)
    question = Question(node.node_settings(), flower_run_id=12)
    open_dialog(qtbot, page.asker)
    page.site = None  # the page's shutdown would stop the node; here only the question matters
    page.shutdown()
    qtbot.waitUntil(question.answered, timeout=20_000)
    assert question.record is not None and not question.record.approved
    assert page.asker(["another plan"], "0" * 64) == "decline"  # a closed page asks nobody
    node.desk.stop()


def test_notices_from_other_threads_reach_the_banner(qtbot, tmp_path):
    page = FederationPage(f"sqlite:///{tmp_path / 'runs.db'}", tmp_path / "work")
    qtbot.addWidget(page)
    page.show()
    try:
        sentence = "This site refused run 5 from the server at 127.0.0.1:9092: its app is not one this site approved."
        thread = threading.Thread(target=page.notices.say, args=(sentence,))
        thread.start()
        thread.join()
        qtbot.waitUntil(lambda: page.banner.text() == sentence, timeout=5_000)
        assert page.banner.kind == "warning"
    finally:
        page.shutdown()


def test_asked_on_the_gui_thread_itself_the_dialog_answers_in_a_nested_loop(qtbot):
    parent = QWidget()
    qtbot.addWidget(parent)
    asker = ConsentAsker(parent)
    QTimer.singleShot(0, lambda: asker.dialogs()[0].approve_button.click())
    assert asker(["Federation 'x': 1 rounds of 1 local epochs."], "ab" * 32) == "approve"
    assert asker.open_questions == 0
