"""Start the desktop application: QApplication on a qasync event loop (the WebSocket hub will share it)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from desktop.settings import load_settings

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
ENGINE_DELAY_MS = 300


def collect_garbage_on_gui_thread() -> Any:
    """Run Python's cyclic garbage collector only from the GUI thread, on a timer.

    Left automatic, a collection can start in the training thread and destroy Qt objects there, which deadlocks or
    crashes Qt. pyqtgraph's GarbageCollector disables automatic collection and collects from a QTimer instead.
    Keep the returned object alive as long as the application.
    """
    import gc

    from pyqtgraph.util.garbage_collector import GarbageCollector

    # Everything alive now (torch, Lightning, Qt modules: millions of objects) is moved out of the collector's
    # reach, so a full collection on the GUI thread takes milliseconds instead of ~300 ms.
    gc.collect()
    gc.freeze()
    return GarbageCollector(interval=0.5)


def run_app(
    db_url: str | None = None, argv: list[str] | None = None, on_window: Callable[[Any], None] | None = None
) -> int:
    """Open the main window and run until it closes; returns the exit code.

    ``on_window`` is called with the shown main window (embedding and end-to-end tests drive it from there).
    """
    import qasync

    from desktop.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(argv or sys.argv)
    gc_guard = collect_garbage_on_gui_thread()  # noqa: F841 - must live as long as the app
    app.setApplicationName("PneumoFL")
    app.setOrganizationName("PneumoFL")
    icon = RESOURCES / "icons" / "pneumofl.svg"
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    style = RESOURCES / "style.qss"
    if style.exists():
        app.setStyleSheet(style.read_text(encoding="utf-8"))
    settings, warning = load_settings()
    if db_url:
        settings.db_url = db_url
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    closed = asyncio.Event()
    app.aboutToQuit.connect(closed.set)
    window = MainWindow(settings, warning)
    window.show()
    # torch and Lightning load behind the window, once it has been painted: importing holds the GIL for long
    # stretches, and the first paint must not wait for it.
    QTimer.singleShot(ENGINE_DELAY_MS, window.engine.start)
    if on_window is not None:
        on_window(window)
    with loop:
        loop.run_until_complete(closed.wait())
    return 0


def run_remote_viewer(url: str, token: str, run: int | str = "current") -> int:
    """A window with only the remote dashboard (``pneumofl view``)."""
    from desktop.gui.remote_viewer import RemoteViewer

    app = QApplication.instance() or QApplication(sys.argv)
    gc_guard = collect_garbage_on_gui_thread()  # noqa: F841 - must live as long as the app
    app.setApplicationName("PneumoFL viewer")
    viewer = RemoteViewer(url, token, run)
    viewer.setWindowTitle(f"PneumoFL — {url}")
    viewer.resize(1400, 900)
    viewer.show()
    code = app.exec()
    viewer.disconnect_from_hub()
    return code
