"""The main window: the Training, Federation, Runs, Audit trail and Read images pages; runs in closable tabs."""

from __future__ import annotations

import logging
from pathlib import Path

import platformdirs
from PySide6.QtCore import QSettings
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QTabWidget, QVBoxLayout, QWidget

from core.broadcast import BroadcastHub, HubSink
from core.errors import PneumoFLError
from core.persistence import Database
from desktop.engine import EngineLoader
from desktop.gui.audit_page import AuditPage
from desktop.gui.federation_page import FederationPage
from desktop.gui.preferences import PreferencesDialog
from desktop.gui.reading_page import ReadingPage
from desktop.gui.remote_viewer import RemoteViewer
from desktop.gui.runs_page import CompareView, RunsPage, RunViewer
from desktop.gui.share_dialog import ConnectDialog, ShareDialog
from desktop.gui.training_page import TrainingPage
from desktop.gui.widgets import MessageBanner
from desktop.settings import FORM_FIELDS, Settings, save_settings
from desktop.workers import wait_for_threads

log = logging.getLogger(__name__)


PERMANENT_TABS = 5  # Training, Federation, Runs, Audit trail, Read images
CLOSE_WAIT_MS = 30_000  # for the background tasks still running when the window closes (a PACS times out at 30 s)


class MainWindow(QMainWindow):
    """PneumoFL's window. Opens the database read-side here; training opens its own connection in its thread."""

    def __init__(self, settings: Settings, settings_warning: str | None = None, persist_settings: bool = True) -> None:
        super().__init__()
        self.setWindowTitle("PneumoFL")
        self.settings = settings
        self.persist_settings = persist_settings
        self.db: Database | None = None
        self.banner = MessageBanner()
        self.tabs = QTabWidget()
        self.tabs.setTabsClosable(True)
        self.tabs.tabCloseRequested.connect(self._close_tab)
        self.db_label = QLabel()
        self.share_label = QLabel()
        self.statusBar().addPermanentWidget(self.share_label)
        self.statusBar().addPermanentWidget(self.db_label)
        self.hub: BroadcastHub | None = None

        self._open_database()
        self.training_page = TrainingPage(self.db_url, settings.run_config())
        # desktop.app starts it once the window is shown; the Training page says so until it is loaded.
        self.engine = EngineLoader(self)
        self.training_page.engine_loading(True)
        self.engine.ready.connect(lambda _s: self.training_page.engine_loading(False))
        # Bound late: sharing started (or stopped) in the middle of a run applies from that moment.
        self.training_page.extra_sinks = [HubSink(lambda: self.hub)]
        self.runs_page = RunsPage(self.db)
        self.training_page.run_finished.connect(lambda _id: self.runs_page.refresh())
        self.runs_page.open_requested.connect(self.open_run)
        self.runs_page.compare_requested.connect(self.compare_runs)
        self.runs_page.resume_requested.connect(self.resume_run)
        self.runs_page.resume_federation_requested.connect(self.resume_federation)
        self.federation_page = FederationPage(self.db_url, Path(platformdirs.user_data_dir("pneumofl")) / "federation")
        self.federation_page.extra_sinks = [HubSink(lambda: self.hub)]
        self.federation_page.federation_finished.connect(lambda _outcome: self.runs_page.refresh())
        self.tabs.addTab(self.training_page, "Training")
        self.tabs.addTab(self.federation_page, "Federation")
        self.tabs.addTab(self.runs_page, "Runs")
        self.audit_page = AuditPage(self.db)
        self.tabs.addTab(self.audit_page, "Audit trail")
        self.reading_page = ReadingPage(self.db)
        self.training_page.run_finished.connect(lambda _id: self.reading_page.refresh_runs())
        self.tabs.addTab(self.reading_page, "Read images")
        for i in range(PERMANENT_TABS):  # the pages stay
            self.tabs.tabBar().setTabButton(i, self.tabs.tabBar().ButtonPosition.RightSide, None)
        self.tabs.currentChanged.connect(self._tab_shown)

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.banner)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self._build_menu()
        if settings_warning:
            self.banner.show_message(settings_warning, kind="warning")
        geometry = QSettings("PneumoFL", "PneumoFL").value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1400, 900)

    @property
    def db_url(self) -> str | None:
        """The configured database URL (``None``: the default)."""
        return self.settings.db_url or None

    def _open_database(self) -> None:
        try:
            self.db = Database.open(self.db_url)
            self.db_label.setText(f"Database: {self.db.url_for_display}")
        except PneumoFLError as exc:
            self.db = None
            self.db_label.setText("No database")
            self.banner.show_message(f"{exc} Open File → Preferences to choose another database.")

    def _build_menu(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        prefs = QAction("&Preferences…", self)
        prefs.triggered.connect(self.edit_preferences)
        save_defaults = QAction("Save training form as &defaults", self)
        save_defaults.triggered.connect(self.save_training_defaults)
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        connect = QAction("&Connect to remote node…", self)
        connect.triggered.connect(self.ask_connect_remote)
        for action in (prefs, save_defaults, connect, quit_action):
            file_menu.addAction(action)
        share_menu = self.menuBar().addMenu("&Share")
        share = QAction("Share &live view…", self)
        share.triggered.connect(self.edit_sharing)
        share_menu.addAction(share)

    def edit_sharing(self) -> None:
        """Start/stop serving the live view; runs trained while sharing are streamed to viewers."""
        dialog = ShareDialog(self.hub, self, db_url=self.db_url)
        dialog.sharing_changed.connect(self._sharing_changed)
        dialog.open()

    def _sharing_changed(self, hub: BroadcastHub | None) -> None:
        self.hub = hub
        running = hub is not None and hub.running
        self.share_label.setText(f"Sharing at {hub.url}" if running and hub else "")

    def ask_connect_remote(self) -> None:
        """Ask for an address and token, then open the remote dashboard in a tab."""
        dialog = ConnectDialog(self)
        if dialog.exec():
            self.connect_remote(dialog.url.text().strip(), dialog.token.text().strip())

    def connect_remote(self, url: str, token: str) -> RemoteViewer:
        """Open a tab following the current run at ``url``."""
        viewer = RemoteViewer(url, token)
        self.tabs.setCurrentIndex(self.tabs.addTab(viewer, f"Remote {url}"))
        return viewer

    def edit_preferences(self) -> None:
        """Show the preferences; a new database is opened at once."""
        dialog = PreferencesDialog(self.settings, self)
        if dialog.exec():
            self._save_settings()
            if self.db is not None:
                self.db.close()
            self.banner.hide()
            self._open_database()
            self.training_page.db_url = self.db_url
            self.federation_page.db_url = self.db_url
            self.runs_page.set_database(self.db)
            self.reading_page.set_database(self.db)
            self.audit_page.set_database(self.db)
            self._tab_shown(self.tabs.currentIndex())

    def save_training_defaults(self) -> None:
        """Remember the Training page's settings for next time."""
        config = self.training_page.config()
        self.settings.training = {k: getattr(config, k) for k in FORM_FIELDS}
        self.settings.data_folder = "" if config.demo else config.data_path
        self._save_settings()
        self.banner.show_message("Training defaults saved.", kind="info")

    def _save_settings(self) -> None:
        if self.persist_settings:
            save_settings(self.settings)

    def open_run(self, run_id: int) -> None:
        """Open a recorded run in a tab."""
        if self.db is None:
            return
        try:
            viewer = RunViewer(self.db, run_id)
        except PneumoFLError as exc:
            self.banner.show_message(str(exc))
            return
        viewer.read_requested.connect(self.read_with_run)
        self.tabs.setCurrentIndex(self.tabs.addTab(viewer, f"Run {run_id}"))

    def read_with_run(self, run_id: int) -> None:
        """Open the Read images page with run ``run_id`` chosen."""
        self.reading_page.select_run(run_id)
        self.tabs.setCurrentWidget(self.reading_page)

    def resume_federation(self, run_id: int) -> None:
        """Continue server run ``run_id`` on the Federation page (its Server form gives the address)."""
        self.tabs.setCurrentWidget(self.federation_page)
        self.federation_page.resume_server(run_id)

    def resume_run(self, run_id: int) -> None:
        """Continue run ``run_id`` on the Training page, where its charts follow it."""
        if self.training_page.resume_run(run_id):
            self.tabs.setCurrentWidget(self.training_page)
        else:
            self.runs_page.banner.show_message(f"Run {self.training_page.run_id} is training; stop it first.")

    def compare_runs(self, run_ids: list[int]) -> None:
        """Overlay runs in a tab."""
        if self.db is None:
            return
        view = CompareView(self.db, run_ids)
        self.tabs.setCurrentIndex(self.tabs.addTab(view, "Compare " + ", ".join(map(str, run_ids))))

    def _tab_shown(self, index: int) -> None:
        """The audit trail is read when its page is shown, never at start-up."""
        if self.tabs.widget(index) is self.audit_page and self.db is not None:
            self.audit_page.refresh()

    def _close_tab(self, index: int) -> None:
        if index >= PERMANENT_TABS:
            widget = self.tabs.widget(index)
            self.tabs.removeTab(index)
            if isinstance(widget, RemoteViewer):
                widget.disconnect_from_hub()
            widget.deleteLater()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Stop a running training cleanly (it is recorded as cancelled) before closing."""
        if self.training_page.running:
            self.statusBar().showMessage("Stopping the training run…")
            self.training_page.stop_and_wait()
        if self.federation_page.running:
            self.statusBar().showMessage("Stopping the federation…")
        self.federation_page.shutdown()  # no Flower process outlives the app
        self.reading_page.shutdown()  # nor a study retrieved from the PACS in the cache
        wait_for_threads(self, CLOSE_WAIT_MS)  # a reading just cancelled, a search or a send to the PACS
        for i in range(self.tabs.count()):
            widget = self.tabs.widget(i)
            if isinstance(widget, RemoteViewer):
                widget.disconnect_from_hub()
        QSettings("PneumoFL", "PneumoFL").setValue("geometry", self.saveGeometry())
        if self.db is not None:
            self.db.close()
        event.accept()
