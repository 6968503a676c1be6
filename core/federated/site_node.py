"""The site node as a process owner: one SuperNode that runs only the app its data steward approved."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.audit import kinds
from core.audit.trail import record_safely as audit
from core.federated.app_trust import StewardKey, check_trusted_entities, pneumofl_fab
from core.federated.policy import ca_fingerprint
from core.federated.processes import ANSI, FlowerProcessError, ManagedProcess, flower_environment, free_port, log_text
from core.federated.settings import SITE_SETTINGS_ENV, SiteSettings
from core.federated.site_consent import ConsentDesk, PlanRecord, check_server_allowed
from core.federated.site_guard import RefusalWatch, send_approval
from core.federated.site_worker import SiteWorker
from core.persistence import Database
from core.persistence.runs import owned_runs, set_run_status

log = logging.getLogger(__name__)


class SiteNode:
    """Owns one SuperNode and the site's warm training worker: a site connected to a SuperLink.

    Parameters
    ----------
    site
        The site's own settings (its node config).
    superlink
        The fleet address, ``host:port``.
    work_dir
        Logs and ``FLWR_HOME``.
    root_certificates
        The federation CA (TLS); None connects insecurely (loopback only).
    private_key
        The site's node key (node authentication).
    extra_env
        Passed to the SuperNode (the hub URL and secret).
    steward
        The site data steward's key: the SuperNode runs only apps it signed (default: the key in the user's
        config folder, made on first use).
    send_approval
        Send the steward's approval of this version's app to the server's fleet front at start; False when the
        caller hands it to the server itself (:attr:`approval`, the local federation).
    on_notice
        Called with sentences the site's user must see (an app the site refused), from a watch thread.
    asker
        Puts a plan within the site's policy to its user: called with the plan's lines and hash, returns
        ``"approve"``, ``"decline"`` or ``"approve-within-policy"`` (see :mod:`core.federated.site_consent`).
        None: plans are declined unless the site approves plans within its policy.
    on_decided
        Called (from the consent thread) with each plan decision once it is audited.
    warm_worker
        Start the worker process that trains the site's rounds, keeping torch, Lightning and the site's data
        loaded between them (see :mod:`core.federated.site_worker`). PneumoFL's ClientApp needs it; False is
        for benchmarks of other apps, which train in Flower's ClientApp process.
    """

    def __init__(
        self,
        site: SiteSettings,
        superlink: str,
        work_dir: Path,
        *,
        root_certificates: Path | None = None,
        private_key: Path | None = None,
        extra_env: dict[str, str] | None = None,
        steward: StewardKey | None = None,
        send_approval: bool = True,
        on_notice: Callable[[str], None] | None = None,
        asker: Callable[[list[str], str], str] | None = None,
        on_decided: Callable[[PlanRecord], None] | None = None,
        warm_worker: bool = True,
    ) -> None:
        host = superlink.rsplit(":", 1)[0].strip("[]")
        if root_certificates is None and host not in ("127.0.0.1", "localhost", "::1"):
            raise FlowerProcessError(
                f"Connecting to {superlink} needs TLS: pass the federation's CA certificate (--ca). "
                "--insecure is only for 127.0.0.1."
            )
        self.site, self.superlink_address, self.work_dir = site, superlink, work_dir
        # Flower's SuperNode reads these relative to its own working folder: resolve what the user typed.
        self.root_certificates = Path(root_certificates).expanduser().resolve() if root_certificates else None
        self.private_key = Path(private_key).expanduser().resolve() if private_key else None
        self._extra_env = dict(extra_env or {})
        self.process: ManagedProcess | None = None
        self.node_id: int | None = None
        self.steward = (steward or StewardKey()).load_or_create()
        self.approval = self.steward.approve(pneumofl_fab(), site.site_name)
        self._send_approval, self.on_notice = send_approval, on_notice
        self.server_reply = ""  # what the server said to the approval
        self._watch: RefusalWatch | None = None
        self._asker, self._on_decided = asker, on_decided
        self.desk: ConsentDesk | None = None
        self.warm_worker = warm_worker
        self.worker: SiteWorker | None = None

    def start(self, *, wait: float = 0.0, cancel: threading.Event | None = None) -> None:
        """Start the SuperNode (it keeps retrying until the SuperLink answers; see :meth:`wait_connected`).

        Parameters
        ----------
        wait
            How long to keep trying to hand the approval to a server that does not listen yet (a headless site
            started before its server).
        cancel
            Set to stop waiting for the server.
        """
        Database.open(self.site.db_url).close()  # fail here, not in every round, on a bad URL
        settings = self.node_settings()
        check_server_allowed(settings)  # the steward's first limit: which servers this site trains for
        if self._send_approval:  # first: a server of another version is a sentence before anything starts
            self.server_reply = send_approval(
                self.superlink_address,
                self.approval,
                self.root_certificates,
                self.private_key,
                wait=wait,
                cancel=cancel,
                on_notice=self.on_notice,
            )
        trusted = self.steward.write_trusted_entities(self.work_dir / "trusted-entities.yaml")
        check_trusted_entities(trusted)  # never start with Flower's check silently off
        settings_file = settings.save(self.work_dir / "site-settings.json")
        env = flower_environment(self.work_dir / "flwr-home", self._extra_env | {SITE_SETTINGS_ENV: str(settings_file)})
        self.desk = ConsentDesk(settings, self._asker, self._on_decided)
        self.desk.start()
        if self.warm_worker:  # first: it imports torch while the SuperNode connects
            log_path = self.work_dir / "logs" / f"worker-{self.site.site_name}.log"
            self.worker = SiteWorker(Path(settings.worker_dir), env, log_path)
            self.worker.start()
        command = [
            "flower-supernode",
            "--superlink",
            self.superlink_address,
            "--port",
            str(free_port()),
            "--node-config",
            str(settings.write_node_config(self.work_dir / "node-config.toml")),
            "--trusted-entities",
            str(trusted),
        ]
        if self.root_certificates is not None:
            command += ["--root-certificates", str(self.root_certificates)]
        else:
            command += ["--insecure"]
        if self.private_key is not None:
            command += ["--auth-supernode-private-key", str(self.private_key)]
        name = f"SuperNode {self.site.site_name}"
        self.process = ManagedProcess(
            name, command, env, self.work_dir / "logs" / f"supernode-{self.site.site_name}.log"
        )
        audit(
            self.site.db_url,
            kinds.SITE_JOINED,
            {"site": self.site.site_name, "server": self.superlink_address, "app_sha256": self.approval.fab_sha256},
        )
        self._watch = RefusalWatch(self.process.log_path, self.superlink_address, self._refused)
        self._watch.start()

    def _refused(self, flower_run_id: int, sentence: str) -> None:
        audit(
            self.site.db_url,
            kinds.APP_REFUSED,
            {"site": self.site.site_name, "server": self.superlink_address, "flower_run_id": flower_run_id},
        )
        if self.on_notice is not None:
            self.on_notice(sentence)

    @property
    def refused_runs(self) -> dict[int, str]:
        """Flower runs this site refused to run, with the sentence said about each."""
        if self._watch is not None:
            self._watch.poll()
        return dict(self._watch.refused) if self._watch is not None else {}

    def wait_connected(self, timeout: float = 60.0) -> int:
        """Wait until the SuperLink has accepted this site; return its Flower node id.

        Raises
        ------
        FlowerProcessError
            In one sentence: the server refused the site's key (naming its fingerprint and what the server's
            administrator must do), or the SuperNode stopped or could not connect in time.
        """
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = ANSI.sub("", self.process.log_tail(20_000))
            found = re.search(r"SuperNode ID: (\d+)", text)
            if found:
                self.node_id = int(found.group(1))
                return self.node_id
            if not self.process.alive() or "Exit Code:" in text:
                raise FlowerProcessError(self._refusal(text))
            time.sleep(0.2)
        raise FlowerProcessError(
            f"Site '{self.site.site_name}' could not reach the server at {self.superlink_address} within "
            f"{timeout:.0f} s: check the address and that the server is running. The SuperNode's log is in "
            f"{self.process.log_path}."
        )

    def _refusal(self, log: str) -> str:
        if "Failed to activate SuperNode" in log and self.private_key is not None:
            from core.federated.certs import CertificateError, private_key_fingerprint

            try:
                print_ = private_key_fingerprint(self.private_key)
            except CertificateError:
                print_ = "unreadable"
            return (
                f"The server at {self.superlink_address} refused site '{self.site.site_name}': its key "
                f"(fingerprint {print_}) is not enrolled. Ask the server's administrator to enrol this site's "
                f"public key ({self.private_key.with_suffix('.pub').name}), e.g. `pneumofl server start ... "
                f"--enrol {self.private_key.with_suffix('.pub').name}`, then join again."
            )
        assert self.process is not None
        return (
            f"Site '{self.site.site_name}' could not connect to the server at {self.superlink_address}. "
            f"The SuperNode's log ({self.process.log_path}) ends with:\n{log_text(self.process, 800)}"
        )

    @property
    def dataset_cache(self) -> Path:
        """Where the site's validated dataset is kept between rounds (see :mod:`core.data.cache`)."""
        return Path(self.site.cache_dir) if self.site.cache_dir else self.work_dir / "dataset-cache"

    def node_settings(self) -> SiteSettings:
        """The settings the site's ClientApp reads: the site's own, with the node's folders and server."""
        fingerprint = ca_fingerprint(self.root_certificates) if self.root_certificates is not None else ""
        return dataclasses.replace(
            self.site,
            cache_dir=str(self.dataset_cache),
            consent_dir=str(self.work_dir / "consent"),
            server_address=self.site.server_address or self.superlink_address,
            server_fingerprint=fingerprint,
            worker_dir=str(self.work_dir / "worker") if self.warm_worker else "",
        )

    def alive(self) -> bool:
        """Whether the SuperNode is running."""
        return self.process is not None and self.process.alive()

    def stop(self) -> None:
        """Stop the SuperNode and any ClientApp it is running; a run it left unfinished is recorded cancelled."""
        if self.process is None:
            return
        self.process.stop()
        if self.worker is not None:
            self.worker.stop()
        if self.desk is not None:
            self.desk.stop()
        if self._watch is not None:
            self._watch.stop()
        audit(self.site.db_url, kinds.SITE_LEFT, {"site": self.site.site_name, "server": self.superlink_address})
        try:
            db = Database.open(self.site.db_url, migrate=False)
        except Exception:
            log.warning("could not record the site's runs as cancelled", exc_info=True)
            return
        try:
            with db.begin() as session:
                left = owned_runs(session, os.getpid(), "site")
                set_run_status(session, left, "cancelled", "The site left the federation before it ended.")
        finally:
            db.close()

    def kill(self) -> None:
        """Kill the SuperNode and its ClientApp at once, as a crash or power cut would (fault tests)."""
        if self.worker is not None:
            self.worker.kill()
        if self.process is not None:
            for proc in self.process.descendants():
                with contextlib.suppress(Exception):
                    proc.kill()
            self.process.kill()
