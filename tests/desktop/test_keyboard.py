"""Every action is reachable by keyboard and every text is readable: real widgets, offscreen.

Each button of each page (and of the PACS dialogs) has an Alt+letter of its own on that page, not taken by the
menus; dialogs answer Enter and Escape; no text is set below 9 pt with the app's style sheet.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractButton, QDialogButtonBox, QTabWidget, QWidget

from desktop.gui.consent_dialog import ConsentDialog
from desktop.gui.main_window import MainWindow
from desktop.gui.pacs_dialog import PacsStudyDialog
from desktop.gui.pacs_preferences import PacsNodeDialog
from desktop.gui.preferences import PreferencesDialog
from desktop.settings import Settings
from tests.desktop.conftest import use_app_style


def _key(text: str) -> str | None:
    found = re.search(r"&([^&])", text)
    return found.group(1).lower() if found else None


def _buttons(root: QWidget) -> list[QAbstractButton]:
    """The buttons a user sees in ``root``, less a dialog's standard buttons (Enter and Escape answer those)."""
    return [
        b
        for b in root.findChildren(QAbstractButton)
        if b.text() and b.isVisibleTo(root) and not isinstance(b.parent(), QDialogButtonBox)
    ]


def _check_keys(where: str, buttons: list[QAbstractButton], taken: set[str]) -> None:
    missing = [b.text() for b in buttons if _key(b.text()) is None]
    assert not missing, f"{where}: no Alt+letter for {missing}"
    keys = Counter(_key(b.text()) for b in buttons)
    twice = {k: [b.text() for b in buttons if _key(b.text()) == k] for k, n in keys.items() if n > 1 or k in taken}
    assert not twice, f"{where}: Alt+letters used twice (or by a menu): {twice}"


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    for name in ("CONFIG", "CACHE", "DATA"):
        monkeypatch.setenv(f"XDG_{name}_HOME", str(tmp_path / name.lower()))
    use_app_style()
    main = MainWindow(Settings(db_url=f"sqlite:///{tmp_path / 'runs.db'}"), persist_settings=False)
    qtbot.addWidget(main)
    main.resize(1366, 768)
    main.show()
    return main


def test_every_button_of_every_page_has_an_alt_key_of_its_own(window):
    menus = {_key(action.text()) for action in window.menuBar().actions()}
    assert menus == {"f", "s"}
    for index in range(window.tabs.count()):
        window.tabs.setCurrentIndex(index)
        page = window.tabs.widget(index)
        if hasattr(page, "banner"):
            page.banner.show_message("A sentence.", "details")  # its Details and Dismiss share the page's keys
        modes = page.findChild(QTabWidget)
        for mode in range(modes.count()) if modes is not None else [None]:
            if mode is not None:
                modes.setCurrentIndex(mode)
            where = window.tabs.tabText(index) + (f" ({modes.tabText(mode)})" if mode is not None else "")
            _check_keys(where, _buttons(page), menus)


def test_dialogs_answer_enter_and_escape_and_have_alt_keys(qtbot, window):
    preferences = PreferencesDialog(window.settings, window)
    preferences.show()
    _check_keys("Preferences", _buttons(preferences), set())
    qtbot.keyClick(preferences, Qt.Key.Key_Escape)
    assert not preferences.isVisible() and preferences.result() == 0

    node = PacsNodeDialog(None, window)
    node.show()
    _check_keys("PACS node", _buttons(node), set())
    qtbot.keyClick(node.host, Qt.Key.Key_Return)  # Enter is OK: with nothing filled in, a sentence, still open
    assert node.isVisible() and "PACS name ''" in node.banner.text()
    qtbot.keyClick(node, Qt.Key.Key_Escape)
    assert not node.isVisible()

    study = PacsStudyDialog(window.db, window)
    study.show()
    _check_keys("From PACS", _buttons(study), set())
    assert study.search_button.isDefault()  # Enter searches
    qtbot.keyClick(study, Qt.Key.Key_Escape)
    assert not study.isVisible()


def test_no_text_is_below_9_points(window):
    dialogs = [PreferencesDialog(window.settings, window), ConsentDialog(["A plan."], "ab" * 32, window)]
    for root in (window, *dialogs):
        for index in range(window.tabs.count()) if root is window else [0]:
            if root is window:
                window.tabs.setCurrentIndex(index)
            small = {
                f"{type(w).__name__} {getattr(w, 'text', lambda: '')()!r}": w.font().pointSizeF()
                for w in root.findChildren(QWidget)
                if w.isVisibleTo(root) and 0 < w.font().pointSizeF() < 9
            }
            assert not small, f"text below 9 pt in {type(root).__name__}: {small}"
