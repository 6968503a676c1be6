"""The Federation page: simulate a federation on this machine, run the server, or join as a site, and watch it.

The Flower processes push their events to a loopback collector; the page draws them. The work itself is core's
(:mod:`core.federated`), run in a QThread; this page only gathers settings, starts, stops and reports.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QLabel,
    QLineEdit,
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
from core.federated.nodes import (
    FederationOutcome,
    Security,
    ServerNode,
    SiteNode,
    fresh_work_dir,
    reachable_address,
    superlink_state_file,
)
from core.federated.settings import PARTITION_SCHEMES, ServerSettings
from core.federated.site_consent import PlanRecord
from core.persistence import Database, default_database_url
from core.sinks import EventSink
from desktop.bridge import QtEventBridge
from desktop.charts.federation import FederationDashboard
from desktop.gui.consent_dialog import ConsentAsker
from desktop.gui.plan_form import PlanFields
from desktop.gui.server_form import ServerForm, ServerInputs
from desktop.gui.site_join import SiteForm
from desktop.gui.widgets import MessageBanner
from desktop.workers import SentenceRelay, run_in_thread


class FederationPage(QWidget):
    """Federated training from the GUI. Emits ``federation_finished(outcome)`` when a run ends."""

    federation_finished = Signal(object)
    plan_decided = Signal(object)  # a PlanRecord, from the site's consent thread

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
        # Sentences the Flower side's threads must show, and the site's consent questions, hop to this thread.
        self.notices = SentenceRelay(self)
        self.notices.said.connect(self._notice)
        self.asker = ConsentAsker(self)
        self.plan_decided.connect(self._plan_decided)
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
        self.server_form = ServerForm()
        self.server_button = self.server_form.server_button
        self.server_button.clicked.connect(self.start_server)
        self.server_form.key_chosen.connect(self.enrol_key)
        self.modes.addTab(self.server_form, "Server")
        self.join_form = SiteForm()
        self.join_button = self.join_form.join_button
        self.join_button.clicked.connect(self.join)
        self.modes.addTab(self.join_form, "Join as a site")
        self.modes.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.status = QLabel("No federation running.")
        self.status.setWordWrap(True)
        self.stop_button = QPushButton("S&top")
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
        self.sim_button = QPushButton("Simulate a federation on this mac&hine")
        self.sim_button.clicked.connect(self.simulate)
        form.addRow(self.sim_button)
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
        """Start the SuperLink and fleet front, enrol the listed keys, wait for the sites' approvals, run the plan."""
        try:
            inputs = self.server_form.inputs()
        except PneumoFLError as exc:
            self.banner.show_message(str(exc))
            return
        self._start_server(inputs)

    def resume_server(self, run_id: int) -> bool:
        """Continue server run ``run_id`` at its next round, with its plan, at the Server form's address.

        Returns whether it started; if not, the banner says why (a federation running, the run cannot continue).
        """
        from core.federated.server_state import federation_to_resume  # flwr: only once a federation is resumed

        self.modes.setCurrentWidget(self.server_form)
        if self.running:
            self.banner.show_message(f"A federation is running; stop it before resuming run {run_id}.")
            return False
        try:
            with Database.open(self._db_url()) as db:
                resumed = federation_to_resume(db, run_id)
            if not self.server_form.eval_data.text().strip():
                self.server_form.eval_data.setText(resumed.eval_data)
            inputs = dataclasses.replace(self.server_form.inputs(), plan=resumed.plan)
        except PneumoFLError as exc:
            self.banner.show_message(str(exc))
            return False
        self._start_server(inputs, resume_run_id=run_id)
        return True

    def _start_server(self, inputs: ServerInputs, resume_run_id: int = 0) -> None:
        plan, keys = inputs.plan, inputs.keys
        settings = ServerSettings(
            db_url=self._db_url(), eval_data=inputs.eval_data, address=inputs.address, resume_run_id=resume_run_id
        )
        # Sites always connect through the fleet front (it takes their approvals); the SuperLink gets a free port.
        server = self.server = ServerNode(
            settings,
            fresh_work_dir("server", self.work_root),
            security=Security.from_dir(inputs.certs) if inputs.certs is not None else None,
            public_host=inputs.host if inputs.certs is not None else "127.0.0.1",
            public_port=inputs.port,
            port=0,
            extra_env=self._events_env(),
            on_notice=self.notices.say,
            state_file=superlink_state_file(inputs.port),  # on disk: a server started again can resume
        )

        def work() -> FederationOutcome:
            try:
                server.start()
                for key in keys:
                    server.enrol(key)
                # Flower fixes an app's signatures when the run is submitted: wait for the sites' approvals first.
                server.wait_for_approvals(plan.min_sites, plan.round_timeout, self.cancel)
                if self.cancel.is_set():
                    return FederationOutcome(0, "cancelled", "Stopped by the user before the run was submitted.")
                return server.follow(server.submit(plan), cancel=self.cancel)
            finally:
                server.stop()

        self._launch(
            work,
            f"Server running; sites connect to {reachable_address(inputs.host, inputs.port)}. The run starts once "
            f"{plan.min_sites} site(s) joined and approved this server's app.",
        )

    def join(self) -> None:
        """Check the site's settings, policy and images, then start its SuperNode."""
        from core.config import RunConfig
        from core.data.prepare import prepare_dataset

        try:
            site = self.join_form.site_settings(self._db_url())
            node = SiteNode(
                site,
                site.server_address,
                fresh_work_dir(f"site-{site.site_name}", self.work_root),
                root_certificates=self.join_form.ca_path(),
                private_key=self.join_form.key_path(),
                extra_env=self._events_env(),
                asker=self.asker,
                on_notice=self.notices.say,
                on_decided=self.plan_decided.emit,
            )
        except Exception as exc:  # noqa: BLE001 - a sentence for the user
            self.banner.show_message(str(exc))
            return

        def started(_summary: object) -> None:
            self.site = node
            self.stop_button.setEnabled(True)
            self.join_button.setEnabled(False)
            self.status.setText(f"Joined {site.server_address} as '{site.site_name}'; training when the server asks.")

        def work() -> object:
            config = RunConfig(experiment_name=site.site_name, data_path=site.data_path)
            summary = prepare_dataset(config, cache_dir=node.dataset_cache).summary  # the first round reuses it
            node.start()
            return summary

        self.banner.hide()
        self.status.setText("Checking this site's images…")
        run_in_thread(self, work, on_result=started, on_error=lambda m, d: self.banner.show_message(m, d))

    def stop(self) -> None:
        """Stop the running federation (recorded as cancelled) or leave as a site."""
        self.cancel.set()
        if self.site is not None:
            self.leave()
        else:
            self.status.setText("Stopping the federation…")

    def leave(self) -> None:
        """Leave the federation as a site: decline any open question, stop the node in the background."""
        self.asker.decline_open()
        node, self.site = self.site, None
        if node is not None:
            run_in_thread(self, node.stop, on_error=lambda m, d: self.banner.show_message(m, d))
        self.status.setText("Left the federation.")
        self.join_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    @Slot(object)
    def _plan_decided(self, record: PlanRecord) -> None:
        """A plan the site's user declined (already audited by the site node): this site leaves the federation."""
        node = self.site
        if record.approved or not record.asked or node is None:
            return
        self.leave()
        self.banner.show_message(
            f"Declined the plan of {node.superlink_address}; this site left the federation.", kind="info"
        )

    @Slot(str)
    def _notice(self, sentence: str) -> None:
        self.banner.show_message(sentence, kind="warning")

    def shutdown(self, timeout_ms: int = 60_000) -> None:
        """Stop everything and wait (the app is quitting): no Flower process outlives the app."""
        self.cancel.set()
        self.asker.close()  # an open question is declined: the node's consent thread must not wait on us
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
            logs = self.site.work_dir / "logs"
            self.leave()  # its consent desk and watch stop too, and the site's unfinished run is closed
            self.banner.show_message(f"The SuperNode stopped; its log is in {logs}.")
        server = self.server
        if server is not None and server.control is not None and server.alive():
            run_in_thread(self, server.online_sites, on_result=self.server_form.show_sites, on_error=lambda m, d: None)

    def _relay(self, event) -> None:  # collector thread
        self._bridge_sink.handle(event)
        for sink in self.extra_sinks:
            sink.handle(event)

    def _events_env(self) -> dict[str, str]:
        self.collector.start()
        return self.collector.env

    def _db_url(self) -> str:
        return self.db_url or default_database_url()

    def enrol_key(self, path: Path) -> None:
        """Add a site's public key; enrolled at once when the server is running."""
        self.server_form.enrolled.addItem(str(path))
        server = self.server
        if server is not None and server.control is not None and server.alive():
            run_in_thread(self, server.enrol, path, on_error=lambda m, d: self.banner.show_message(m, d))
