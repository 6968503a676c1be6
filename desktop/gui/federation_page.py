"""The Federation page: simulate a federation on this machine, run the server, or join as a site, and watch it.

The Flower processes push their events to a loopback collector; the page draws them. The work itself is core's
(:mod:`core.federated`), run in a QThread; this page only gathers settings, starts, stops and reports.
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.broadcast.collector import EventCollector
from core.errors import PneumoFLError
from core.federated.nodes import FederationOutcome, Security, ServerNode, SiteNode, fresh_work_dir, reachable_address
from core.federated.settings import PARTITION_SCHEMES, ServerSettings, SiteSettings
from core.persistence import default_database_url
from core.sinks import EventSink
from desktop.bridge import QtEventBridge
from desktop.charts.federation import FederationDashboard
from desktop.gui.certs_dialog import CertsDialog
from desktop.gui.plan_form import PlanFields
from desktop.gui.widgets import MessageBanner
from desktop.workers import run_in_thread


class FederationPage(QWidget):
    """Federated training from the GUI. Emits ``federation_finished(outcome)`` when a run ends."""

    federation_finished = Signal(object)

    def __init__(self, db_url: str | None, work_root: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.db_url = db_url
        self.work_root = work_root
        self.bridge = QtEventBridge(self)
        self._bridge_sink = self.bridge.sink()
        self.extra_sinks: list[EventSink] = []  # the sharing hub, so remote viewers see the federation too
        self.collector = EventCollector([self._relay])
        self.cancel = threading.Event()
        self.server: ServerNode | None = None
        self.site: SiteNode | None = None
        self._thread = None
        self.last_outcome: FederationOutcome | None = None
        self._build()
        self.bridge.event.connect(self.dashboard.handle_event)
        self.site_timer = QTimer(self)
        self.site_timer.timeout.connect(self._poll)
        self.site_timer.start(3000)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        # As on the Training page: the forms in a column at their natural width, the live view beside them.
        self.banner = MessageBanner()
        self.modes = QTabWidget()
        self.modes.addTab(self._simulate_form(), "Simulate")
        self.modes.addTab(self._server_form(), "Server")
        self.modes.addTab(self._join_form(), "Join as a site")
        self.modes.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.status = QLabel("No federation running.")
        self.status.setWordWrap(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        column = QWidget()
        controls = QVBoxLayout(column)
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(self.modes)
        controls.addWidget(self.stop_button)
        controls.addWidget(self.status)
        controls.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(column)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(column.sizeHint().width() + 20)
        scroll.setMaximumWidth(460)
        self.dashboard = FederationDashboard()
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(scroll)
        splitter.addWidget(self.dashboard)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addWidget(splitter, 1)

    def _simulate_form(self) -> QWidget:
        box = QWidget()
        form = QFormLayout(box)
        self.sim_sites = QSpinBox()
        self.sim_sites.setRange(2, 8)
        self.sim_sites.setValue(3)
        self.sim_partition = QComboBox()
        self.sim_partition.addItems(PARTITION_SCHEMES)
        self.sim_partition.setToolTip("iid: sites look alike. label-skew: each site has its own mix of classes.")
        self.sim_data = QLineEdit()
        self.sim_data.setPlaceholderText("Demo data (built in)")
        form.addRow("Sites", self.sim_sites)
        form.addRow("Partition", self.sim_partition)
        form.addRow("Data", self.sim_data)
        self.sim_plan = PlanFields(form)
        self.sim_button = QPushButton("Simulate a federation on this machine")
        self.sim_button.clicked.connect(self.simulate)
        form.addRow(self.sim_button)
        return box

    def _server_form(self) -> QWidget:
        box = QWidget()
        form = QFormLayout(box)
        self.eval_data = QLineEdit()
        self.eval_data.setPlaceholderText("The server's held-out labelled images")
        browse = QPushButton("Folder…")
        browse.clicked.connect(lambda: self._browse_dir(self.eval_data))
        form.addRow("Evaluation data", _row(self.eval_data, browse))
        self.listen = QLineEdit("0.0.0.0:9092")
        form.addRow("Sites connect to", self.listen)
        self.certs_dir = QLineEdit()
        self.certs_dir.setPlaceholderText("Folder from 'Create certificates…'")
        create = QPushButton("Create certificates…")
        create.clicked.connect(self._create_certs)
        form.addRow("Certificates", _row(self.certs_dir, create))
        self.insecure = QCheckBox("No TLS (only for sites on this machine, 127.0.0.1)")
        form.addRow(self.insecure)
        self.enrolled = QListWidget()
        self.enrolled.setMaximumHeight(70)
        enrol = QPushButton("Enrol a site's key…")
        enrol.setToolTip("A site's public key (nodes/<site>.pub). Only enrolled sites can connect.")
        enrol.clicked.connect(self._choose_site_key)
        form.addRow("Enrolled sites", _row(self.enrolled, enrol))
        self.online = QLabel("-")
        form.addRow("Online sites", self.online)
        self.server_plan = PlanFields(form)
        self.server_button = QPushButton("Start the server and run")
        self.server_button.clicked.connect(self.start_server)
        form.addRow(self.server_button)
        return box

    def _join_form(self) -> QWidget:
        box = QWidget()
        form = QFormLayout(box)
        self.join_server = QLineEdit()
        self.join_server.setPlaceholderText("fl.hospital.example:9092")
        self.join_data = QLineEdit()
        browse = QPushButton("Folder…")
        browse.clicked.connect(lambda: self._browse_dir(self.join_data))
        self.join_ca = QLineEdit()
        self.join_ca.setPlaceholderText("ca.pem from the server's administrator")
        self.join_key = QLineEdit()
        self.join_key.setPlaceholderText("this site's key, nodes/<site>.key")
        self.join_name = QLineEdit("my-site")
        form.addRow("Server address", self.join_server)
        form.addRow("This site's images", _row(self.join_data, browse))
        form.addRow("Federation CA", self.join_ca)
        form.addRow("Site key", self.join_key)
        form.addRow("Site name", self.join_name)
        form.addRow(QLabel("Only the model's weights and aggregate numbers leave this computer."))
        self.join_button = QPushButton("Check my images and join")
        self.join_button.clicked.connect(self.join)
        form.addRow(self.join_button)
        return box

    # ------------------------------------------------------------------ actions
    @property
    def running(self) -> bool:
        """Whether a federation (or a site) is active."""
        return self._thread is not None or self.site is not None

    def simulate(self) -> None:
        """Run a local federation with the form's settings."""
        from core.federated.local import LocalFederation

        try:
            plan = self.sim_plan.plan()
        except PneumoFLError as exc:
            self.banner.show_message(str(exc))
            return
        sites = self.sim_sites.value()
        if plan.min_sites > sites:
            self.banner.show_message(f"Sites needed per round ({plan.min_sites}) is more than the {sites} sites.")
            return
        federation = LocalFederation(
            self._db_url(),
            fresh_work_dir("local", self.work_root),
            sites=sites,
            partition=self.sim_partition.currentText(),
            data_path=self.sim_data.text().strip() or None,
            extra_env=self._events_env(),
        )

        def work() -> FederationOutcome:
            with federation:
                self.server = federation.server
                return federation.run(plan, cancel=self.cancel)

        self._launch(work, f"Simulating {sites} sites on this machine…")

    def start_server(self) -> None:
        """Start the SuperLink (and fleet front), enrol the listed keys, run the plan."""
        from desktop.cli.serving import parse_address

        try:
            host, port = parse_address(self.listen.text().strip())
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.banner.show_message(str(exc).replace("--serve", "The address"))
            return
        eval_data = self.eval_data.text().strip()
        if not eval_data or not Path(eval_data).exists():
            self.banner.show_message("Choose the server's evaluation images (a folder that exists).")
            return
        insecure = self.insecure.isChecked()
        if insecure and host not in ("127.0.0.1", "localhost"):
            self.banner.show_message(f"Without TLS the server can only listen on 127.0.0.1, not {host}.")
            return
        certs = Path(self.certs_dir.text().strip()).expanduser() if self.certs_dir.text().strip() else None
        if not insecure and (certs is None or not (certs / "ca.pem").is_file()):
            self.banner.show_message(
                "Choose the certificates folder (or create one), or tick 'No TLS' for a local trial."
            )
            return
        settings = ServerSettings(db_url=self._db_url(), eval_data=eval_data, address=self.listen.text().strip())
        self.server = ServerNode(
            settings,
            fresh_work_dir("server", self.work_root),
            security=Security.from_dir(certs) if certs and not insecure else None,
            public_host="" if insecure else host,
            public_port=port,
            port=port if insecure else 0,
            extra_env=self._events_env(),
        )
        try:
            plan = self.server_plan.plan()
        except PneumoFLError as exc:
            self.banner.show_message(str(exc))
            return
        keys = [Path(self.enrolled.item(i).text()) for i in range(self.enrolled.count())]
        server = self.server

        def work() -> FederationOutcome:
            try:
                server.start()
                for key in keys:
                    server.enrol(key)
                return server.follow(server.submit(plan), cancel=self.cancel)
            finally:
                server.stop()

        self._launch(work, f"Server running; sites connect to {reachable_address(host, port)}.")

    def join(self) -> None:
        """Check the site's images, then start its SuperNode."""
        from core.config import RunConfig
        from core.federated.site_cache import prepare_data_cached

        address, data = self.join_server.text().strip(), self.join_data.text().strip()
        ca, key = self.join_ca.text().strip(), self.join_key.text().strip()
        if not address or not data:
            self.banner.show_message("Enter the server address and choose this site's images.")
            return
        site = SiteSettings(
            site_name=self.join_name.text().strip() or "site",
            data_path=data,
            db_url=self._db_url(),
            server_address=address,
        )
        try:
            node = SiteNode(
                site,
                address,
                fresh_work_dir(f"site-{site.site_name}", self.work_root),
                root_certificates=Path(ca) if ca else None,
                private_key=Path(key) if key else None,
                extra_env=self._events_env(),
            )
        except Exception as exc:  # noqa: BLE001 - a sentence for the user
            self.banner.show_message(str(exc))
            return

        def started(_summary: object) -> None:
            self.site = node
            self.stop_button.setEnabled(True)
            self.join_button.setEnabled(False)
            self.status.setText(f"Joined {address} as '{site.site_name}'; training when the server asks.")

        def work() -> object:
            config = RunConfig(experiment_name=site.site_name, data_path=data)
            summary = prepare_data_cached(config, node.dataset_cache).summary  # the first round reuses it
            node.start()
            return summary

        self.banner.hide()
        self.status.setText("Checking this site's images…")
        run_in_thread(self, work, on_result=started, on_error=lambda m, d: self.banner.show_message(m, d))

    def stop(self) -> None:
        """Stop the running federation (recorded as cancelled) or leave as a site."""
        self.cancel.set()
        if self.site is not None:
            node, self.site = self.site, None
            run_in_thread(self, node.stop)
            self.status.setText("Left the federation.")
            self.join_button.setEnabled(True)
            self.stop_button.setEnabled(False)
        else:
            self.status.setText("Stopping the federation…")

    def shutdown(self, timeout_ms: int = 60_000) -> None:
        """Stop everything and wait (the app is quitting): no Flower process outlives the app."""
        self.cancel.set()
        if self.site is not None:
            self.site.stop()
            self.site = None
        if self._thread is not None:
            self._thread.wait(timeout_ms)
        if self.server is not None:
            self.server.stop()
        self.site_timer.stop()
        self.dashboard.timer.stop()
        self.collector.stop()

    # ------------------------------------------------------------------ plumbing
    def _launch(self, work, message: str) -> None:
        self.banner.hide()
        self.cancel = threading.Event()
        self.dashboard.clear()
        self.status.setText(message)
        for button in (self.sim_button, self.server_button, self.join_button):
            button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self._thread = run_in_thread(self, work, on_result=self._finished, on_error=self._failed)
        self._thread.finished.connect(self._thread_done)

    def _finished(self, outcome: FederationOutcome) -> None:
        self.last_outcome = outcome
        text = f"Federation {outcome.status} in {outcome.seconds:.0f} s (server run {outcome.server_run_id})."
        self.status.setText(text)
        if outcome.status == "failed":
            self.banner.show_message(f"The federation failed: {outcome.message or 'see the logs'}")
        self.federation_finished.emit(outcome)

    def _failed(self, message: str, details: str) -> None:
        self.status.setText("The federation could not run.")
        self.banner.show_message(message, details)

    def _thread_done(self) -> None:
        self._thread = None
        self.server = None
        for button in (self.sim_button, self.server_button, self.join_button):
            button.setEnabled(True)
        self.stop_button.setEnabled(False)

    def _poll(self) -> None:
        """Show which sites are online (server) or notice the SuperNode stopping (site)."""
        if self.site is not None and not self.site.alive():
            self.banner.show_message(f"The SuperNode stopped; its log is in {self.site.work_dir / 'logs'}.")
            self.site = None
            self.join_button.setEnabled(True)
            self.stop_button.setEnabled(False)
        server = self.server
        if server is not None and server.control is not None and server.alive():
            run_in_thread(self, server.online_sites, on_result=self._show_sites, on_error=lambda m, d: None)

    def _show_sites(self, names: list[str]) -> None:
        self.online.setText(f"{len(names)} online" + (f": {', '.join(sorted(names))}" if names else ""))

    def _relay(self, event) -> None:  # collector thread
        self._bridge_sink.handle(event)
        for sink in self.extra_sinks:
            sink.handle(event)

    def _events_env(self) -> dict[str, str]:
        self.collector.start()
        return self.collector.env

    def _db_url(self) -> str:
        return self.db_url or default_database_url()

    def _browse_dir(self, target: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder")
        if folder:
            target.setText(folder)

    def _choose_site_key(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "A site's public key", "", "Public keys (*.pub)")
        if path:
            self.enrol_key(Path(path))

    def enrol_key(self, path: Path) -> None:
        """Add a site's public key; enrolled at once when the server is running."""
        self.enrolled.addItem(str(path))
        server = self.server
        if server is not None and server.control is not None and server.alive():
            run_in_thread(self, server.enrol, path, on_error=lambda m, d: self.banner.show_message(m, d))

    def _create_certs(self) -> None:
        dialog = CertsDialog(self)
        if dialog.exec() and dialog.created is not None:
            self.certs_dir.setText(str(dialog.created.ca_cert.parent))
            self.enrolled.clear()
            for key in dialog.created.nodes.values():
                self.enrolled.addItem(str(key.public_key))


def _row(*widgets: QWidget) -> QWidget:
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget, 1 if isinstance(widget, (QLineEdit, QListWidget)) else 0)
    return box
