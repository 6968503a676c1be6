"""The server node as a process owner: SuperLink, fleet front, app hub and the runs it submits.

The site node (a SuperNode) is :mod:`core.federated.site_node`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from core.audit import kinds
from core.audit.trail import record_safely as audit
from core.federated.app_trust import Approval, AppTrustError
from core.federated.control import FlowerControl, RunStatus
from core.federated.outcome import FederationOutcome, close_federation_runs
from core.federated.processes import (
    ANSI,
    FlowerProcessError,
    ManagedProcess,
    flower_environment,
    free_port,
    fresh_work_dir,
    log_text,
    reachable_address,
    wait_for_port,
)
from core.federated.settings import SERVER_SETTINGS_ENV, FederationConfig, ServerSettings, write_private_json
from core.federated.site_names import SiteNames
from core.federated.site_node import SiteNode
from core.persistence import Database

if TYPE_CHECKING:
    from core.federated.app_hub import AppHub

__all__ = [
    "FederationOutcome",
    "Security",
    "ServerNode",
    "SiteNode",
    "fresh_work_dir",
    "log_text",
    "reachable_address",
]

log = logging.getLogger(__name__)
STOP_GRACE_S = 30.0  # how long a stopped run may take to be reported finished
# Flower's SuperExec picks a submitted run up within seconds; a run still pending after this never will be
# (the SuperExec died: for example a Flower refusing to talk to a Flower it does not recognise).
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Security:
    """TLS and node authentication material (from ``pneumofl certs init``); ``None`` fields mean insecure."""

    ca_cert: Path | None = None
    server_cert: Path | None = None
    server_key: Path | None = None

    @property
    def tls(self) -> bool:
        """Whether TLS is on."""
        return self.ca_cert is not None

    @classmethod
    def from_dir(cls, folder: Path) -> Security:
        """The server's material in a ``certs init`` folder (absolute paths: Flower's config wants them)."""
        folder = Path(folder).expanduser().resolve()
        return cls(folder / "ca.pem", folder / "server.pem", folder / "server.key")


def superlink_state_file(port: int) -> Path:
    """Where the SuperLink of a server whose sites connect on ``port`` keeps its state: the same file every start.

    On disk, so that a server started again after a crash finds its sites registered (they reconnect by
    themselves) and the approvals they gave when they joined (see :meth:`ServerNode.start`).
    """
    import platformdirs

    folder = Path(platformdirs.user_data_dir("pneumofl")) / "server"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder / f"superlink-{port}.db"


def recorded_flower_runs(db_url: str) -> set[int]:
    """Every Flower run the database at ``db_url`` recorded a run of."""
    from sqlalchemy import select

    from core.persistence.models import flower_runs_table
    from core.persistence.runs import from_signed64

    with Database.open(db_url, migrate=False) as db, db.begin() as session:
        return {from_signed64(v) for v in session.execute(select(flower_runs_table.c.flower_run_id)).scalars()}


class ServerNode:
    """Owns the SuperLink (loopback only) and, when a public address is given, the TLS fleet front.

    Parameters
    ----------
    settings
        What the ServerApp reads (database, evaluation data).
    work_dir
        Logs, the SuperLink state and ``FLWR_HOME`` go here.
    security
        TLS material; with it, node authentication is on and sites must be enrolled.
    public_host, public_port
        Where sites connect (through the fleet front, which also takes their app approvals). Empty: sites
        connect to the SuperLink directly and their approvals are given with :meth:`approve` (the local
        federation). ``127.0.0.1`` without TLS is a one-machine trial.
    port
        The SuperLink's loopback port (0 picks a free one).
    extra_env
        Passed to the Flower processes (the hub URL and secret).
    on_notice
        Called with sentences the server's user must see: a site of another PneumoFL version, a run on the
        SuperLink that PneumoFL did not submit.
    """

    def __init__(
        self,
        settings: ServerSettings,
        work_dir: Path,
        *,
        security: Security | None = None,
        public_host: str = "",
        public_port: int = 9092,
        port: int = 0,
        extra_env: dict[str, str] | None = None,
        tap: Callable[[str, bytes, bytes], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
        state_file: Path | None = None,
    ) -> None:
        self.settings, self.work_dir = settings, work_dir
        self.state_file = state_file
        self.on_notice = on_notice
        self.tap = tap
        self.security = security or Security()
        self.public_host, self.public_port = public_host, public_port
        if public_host and not self.security.tls and public_host not in ("127.0.0.1", "localhost"):
            raise FlowerProcessError(
                f"Serving sites on {public_host} needs TLS: run `pneumofl certs init` and pass --certs "
                "(--insecure is only for 127.0.0.1)."
            )
        self.port = port
        self.superlink: ManagedProcess | None = None
        self.front = None
        self.control: FlowerControl | None = None
        self._extra_env = dict(extra_env or {})
        self.site_names = SiteNames(work_dir / "site-names.json")
        self.hub: AppHub | None = None
        self.submitted: set[int] = set()  # Flower runs PneumoFL submitted; any other run is flagged
        self.foreign_runs: dict[int, str] = {}
        self._approvals_lock = threading.Lock()

    @property
    def fleet_address(self) -> str:
        """``host:port`` sites connect to (a wildcard listen address is named as this machine)."""
        if self.front is not None:
            return reachable_address(self.public_host, self.front.port)
        return f"127.0.0.1:{self.port}"

    def enrol(self, public_key: Path, name: str = "") -> str:
        """Let the site holding ``public_key`` connect; remember its name for its Flower node id.

        Raises
        ------
        FlowerProcessError
            If the server is not running, or the key is missing or refused by Flower.
        """
        if self.control is None:
            raise FlowerProcessError("Start the server before enrolling sites.")
        key = Path(public_key).expanduser().resolve()
        if not key.is_file():
            raise FlowerProcessError(f"Site key {key} does not exist (sites' public keys are nodes/<site>.pub).")
        name = name or key.stem
        node_id = self.control.register_node(key, name=name)
        if node_id:
            self.site_names.add(node_id, name)
        if self.hub is not None:
            self.hub.enrolled(key.read_text(encoding="utf-8"), name)
        return node_id

    def online_sites(self) -> list[str]:
        """The names of the sites online now (their node ids when a name is unknown)."""
        assert self.control is not None
        names = self.site_names.read()
        return [
            names.get(int(node["node-id"]), f"node {node['node-id']}")
            for node in self.control.nodes()
            if node.get("status") == "online" and str(node.get("node-id", "")).isdigit()
        ]

    def start(self, timeout: float = 60.0) -> None:
        """Start the SuperLink (and the fleet front) and wait until they listen.

        The database is opened (and migrated) here first: a bad URL fails before any process starts, and the
        app processes never race to migrate a fresh database.
        """
        Database.open(self.settings.db_url).close()
        self.settings = dataclasses.replace(self.settings, sites_file=str(self.site_names.path))
        if not self.settings.cache_dir:
            self.settings = dataclasses.replace(self.settings, cache_dir=str(self.work_dir / "dataset-cache"))
        if self.settings.eval_data:
            from core.config import RunConfig
            from core.data.prepare import prepare_dataset  # pydicom: only nodes that evaluate need it

            # Checked here so a bad folder is a sentence now, not a failed run; the ServerApp reuses the result.
            evaluation = RunConfig(experiment_name="evaluation", data_path=self.settings.eval_data)
            prepare_dataset(evaluation, cache_dir=Path(self.settings.cache_dir))
        home = self.work_dir / "flwr-home"
        settings_file = self.settings.save(self.work_dir / "server-settings.json")
        from core.federated.app_hub import AppHub  # Starlette/uvicorn: only a server needs them

        self.hub = AppHub(on_approval=self._approved, on_notice=self._notice)
        self.hub.start()
        for approval in self._kept_approvals():  # a restarted server: the sites approved when they joined
            self.hub.add(approval)
        # The SuperLink fetches the apps it runs, with the sites' signatures, from our hub and nowhere else.
        hub_env = {SERVER_SETTINGS_ENV: str(settings_file), "FLWR_SUPERGRID_API_URL": self.hub.url}
        env = flower_environment(home, self._extra_env | hub_env)
        self.port = self.port or free_port()
        command = [
            "flower-superlink",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        ]
        if self.state_file is not None:
            # Kept on disk for a server that may be restarted: its sites stay registered, and reconnect.
            command += ["--database", str(self.state_file)]
        # Otherwise in memory: every message object went through its SQLite store (statements and commits each).
        sec = self.security
        if sec.tls:
            command += ["--ssl-certfile", str(sec.server_cert), "--ssl-keyfile", str(sec.server_key)]
            command += ["--ssl-ca-certfile", str(sec.ca_cert), "--enable-supernode-auth"]
        else:
            command += ["--insecure"]
        self.superlink = ManagedProcess("SuperLink", command, env, self.work_dir / "logs" / "superlink.log")
        wait_for_port("127.0.0.1", self.port, self.superlink, timeout)
        self.control = FlowerControl(home, self.port, env, sec.ca_cert)
        if self.state_file is not None:  # runs an earlier server submitted, recorded in our database
            self.submitted |= recorded_flower_runs(self.settings.db_url)
        if self.public_host:
            from core.federated.fleet_front import FleetFront  # only a public server needs uvicorn/httpx here

            self.front = FleetFront(
                self.public_host,
                self.public_port,
                f"{'https' if sec.tls else 'http'}://127.0.0.1:{self.port}",
                sec.server_cert,
                sec.server_key,
                upstream_ca=sec.ca_cert,
                tap=self.tap,
                on_approval=self.hub.receive,
            )
            self.front.start()

    def approve(self, approval: Approval) -> None:
        """Attach a site's steward approval handed over in this process (a local federation's own sites)."""
        assert self.hub is not None, "start() first"
        self.hub.add(approval)

    def wait_for_approvals(self, count: int, timeout: float, cancel: threading.Event | None = None) -> set[str]:
        """Wait until ``count`` sites approved this server's app (they do at join); return their names.

        Flower fixes an app's signatures when the run is submitted, so a run submitted before a site's approval
        arrived is refused by that site.
        """
        assert self.hub is not None, "start() first"
        deadline = time.monotonic() + timeout
        checked = time.monotonic()
        while len(self.hub.approved_sites()) < count and time.monotonic() < deadline:
            if cancel is not None and cancel.is_set():
                break
            if time.monotonic() - checked > 5.0:  # runs submitted behind our back are flagged while we wait too
                checked = time.monotonic()
                with contextlib.suppress(FlowerProcessError):
                    self.check_foreign_runs()
            time.sleep(0.2)
        return self.hub.approved_sites()

    def _notice(self, sentence: str) -> None:
        log.warning("%s", sentence)
        if self.on_notice is not None:
            self.on_notice(sentence)

    @property
    def _approvals_file(self) -> Path | None:
        return self.state_file.with_name(self.state_file.stem + "-approvals.json") if self.state_file else None

    def _kept_approvals(self) -> list[Approval]:
        """The approvals an earlier start of this server received (each checked again)."""
        path = self._approvals_file
        if path is None or not path.is_file():
            return []
        kept = []
        try:
            for text in json.loads(path.read_text(encoding="utf-8")):
                with contextlib.suppress(AppTrustError):
                    kept.append(Approval.from_json(text))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("the approvals kept in %s cannot be read (%s); sites approve again when they rejoin", path, exc)
        return kept

    def _approved(self, approval: Approval) -> None:
        path = self._approvals_file
        if path is not None:  # kept with the SuperLink's state: the sites joined once, not at every restart
            with self._approvals_lock:  # sites approve at the same moment: neither approval may be lost
                kept = {(a.key_id, a.fab_sha256): a.to_json() for a in self._kept_approvals()}
                kept[(approval.key_id, approval.fab_sha256)] = approval.to_json()
                write_private_json(path, list(kept.values()))
        audit(
            self.settings.db_url,
            kinds.SITE_JOINED,
            {"site": approval.site_name, "key_id": approval.key_id, "app_sha256": approval.fab_sha256},
        )

    def alive(self) -> bool:
        """Whether the SuperLink is running."""
        return self.superlink is not None and self.superlink.alive()

    def submit(self, plan: FederationConfig, app_id: str | None = None) -> int:
        """Submit a federation run of PneumoFL's app (or another app offered by the hub); return Flower's run id."""
        if self.control is None or self.hub is None:
            raise FlowerProcessError("Start the server before submitting a run.")
        spec = self.hub.spec(app_id) if app_id else self.hub.spec()
        run_id = self.control.submit(plan.validate().run_config(), self.work_dir, spec)
        self.submitted.add(run_id)
        audit(self.settings.db_url, kinds.RUN_SUBMITTED, {"flower_run_id": run_id, "app": spec, "federation": plan.name})
        return run_id

    def check_foreign_runs(self, runs: dict[int, RunStatus] | None = None) -> list[str]:
        """Flag runs on our SuperLink that PneumoFL did not submit; return the new warnings.

        Anyone with a shell on this machine can submit to the SuperLink. Each such run is warned about once, in
        the log and the audit trail, with the app and its hash as the SuperLink names them.
        """
        if self.control is None:
            return []
        warnings = []
        for run_id, run in (runs if runs is not None else self.control.runs()).items():
            if run_id in self.submitted or run_id in self.foreign_runs:
                continue
            sentence = (
                f"Flower run {run_id} (app {run.app or 'unknown'}, SHA-256 {run.app_sha256[:16] or 'unknown'}) on "
                "this server's SuperLink was not submitted by PneumoFL: someone with access to this machine "
                "submitted it. Sites refuse any app their steward did not approve."
            )
            self.foreign_runs[run_id] = sentence
            self._notice(sentence)
            details = {"flower_run_id": run_id, "app": run.app, "app_sha256": run.app_sha256}
            audit(self.settings.db_url, kinds.RUN_NOT_SUBMITTED, details)
            warnings.append(sentence)
        return warnings

    def follow(
        self,
        flower_run_id: int,
        *,
        cancel: threading.Event | None = None,
        on_status: Callable[[RunStatus], None] | None = None,
        poll: float = 1.0,
        status_every: float = 10.0,
    ) -> FederationOutcome:
        """Wait for the run to end; stop it if ``cancel`` is set; record how it ended.

        The SuperLink dying fails the run; stopping it cancels the run. The database runs (server and, in a
        local federation, the sites) left ``in_progress`` are closed with the outcome.

        Each status read is a ``flwr ls`` process (about 1.5 s of CPU), so it is asked every ``status_every``
        seconds, and every ``poll`` seconds once the server app's process has ended: the run's end is seen
        within a second or two of it, without polling the SuperLink that often throughout.
        """
        assert self.control is not None and self.superlink is not None
        cancel = cancel or threading.Event()
        started = time.monotonic()
        last_check = 0.0
        stop_sent = 0.0  # when the stop was asked for
        status = RunStatus(flower_run_id, "pending")
        app_seen = app_ended = False
        while True:
            time.sleep(poll)
            app_running = self._server_app_running()
            app_seen |= app_running
            app_ended |= app_seen and not app_running
            if not self.superlink.alive():
                message = f"The SuperLink stopped unexpectedly (exit code {self.superlink.popen.returncode})."
                return self._close(flower_run_id, "failed", message, status, started)
            if cancel.is_set() and not stop_sent:
                with contextlib.suppress(FlowerProcessError):
                    self.control.stop(flower_run_id)
                stop_sent = time.monotonic()
            if stop_sent and time.monotonic() - stop_sent > STOP_GRACE_S:
                message = "Stopped by the user (the SuperLink did not confirm the stop; its processes were ended)."
                return self._close(flower_run_id, "cancelled", message, status, started)
            if time.monotonic() - last_check < (poll if stop_sent or app_ended else status_every):
                continue
            last_check = time.monotonic()
            try:
                runs = self.control.runs()  # one `flwr ls` for our run and any run we did not submit
                self.check_foreign_runs(runs)
                status = runs.get(flower_run_id) or self.control.status(flower_run_id)
            except FlowerProcessError as exc:
                log.warning("cannot read the run status: %s", exc)
                continue
            if on_status is not None:
                on_status(status)
            if status.status == "pending" and time.monotonic() - started > START_TIMEOUT_S and not stop_sent:
                with contextlib.suppress(FlowerProcessError):
                    self.control.stop(flower_run_id)
                return self._close(flower_run_id, "failed", self._never_started(), status, started)
            if status.finished:
                outcome = {"completed": "completed", "stopped": "cancelled"}.get(status.outcome, "failed")
                if stop_sent:
                    outcome = "cancelled"
                message = "Stopped by the user." if outcome == "cancelled" else status.details
                return self._close(flower_run_id, outcome, message, status, started)

    def _server_app_running(self) -> bool:
        """Whether a ``flwr-serverapp`` process runs under this node's SuperLink (its SuperExec starts it)."""
        assert self.superlink is not None
        try:
            children = psutil.Process(self.superlink.popen.pid).children(recursive=True)
        except psutil.Error:
            return False
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE and any("flwr-serverapp" in a for a in child.cmdline()[:2]):
                    return True
        return False

    def _never_started(self) -> str:
        assert self.superlink is not None
        errors = [
            ANSI.sub("", line).strip()
            for line in self.superlink.log_tail().splitlines()
            if "ERROR" in line or "Exit Code" in line
        ]
        said = f" It last said: {errors[-1]}" if errors else ""
        return (
            f"Flower never started the server app: the run was still waiting after {START_TIMEOUT_S:.0f} s, so "
            f"the SuperLink's task runner (flower-superexec) is not running.{said} Its log: "
            f"{self.superlink.log_path}."
        )

    def _close(
        self, flower_run_id: int, status: str, message: str, last: RunStatus, started: float
    ) -> FederationOutcome:
        outcome = FederationOutcome(
            flower_run_id,
            status,
            message if message not in ("", "N/A") else "",
            inbound_bytes=last.inbound_bytes,
            outbound_bytes=last.outbound_bytes,
            seconds=time.monotonic() - started,
        )
        return close_federation_runs(self.settings.db_url, outcome)

    def stop(self) -> None:
        """Stop the fleet front and the SuperLink with everything it started."""
        if self.front is not None:
            self.front.stop()
            self.front = None
        if self.superlink is not None:
            self.superlink.stop()
        if self.hub is not None:
            self.hub.stop()
