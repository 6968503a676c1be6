"""The ``flwr`` CLI against our own SuperLink: submit a run, read its status, stop it, enrol sites.

The SuperLink's Control API listens on loopback only (it has no authentication in the open-source build), so
these commands always talk to ``127.0.0.1``. ``flwr run --stream`` exits 0 even when the run failed: the status
is read with ``flwr ls --format json`` instead.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from core.federated.processes import FlowerProcessError

CONNECTION = "pneumofl"
BUNDLE_DIR = Path(str(resources.files("core.federated") / "bundle"))


@dataclass(frozen=True)
class RunStatus:
    """A Flower run's status as ``flwr ls`` reports it."""

    run_id: int
    status: str  # pending, starting, running, finished:completed, finished:failed, finished:stopped
    details: str = ""
    inbound_bytes: int = 0
    outbound_bytes: int = 0
    app: str = ""  # Flower's app id (fab-id), e.g. pneumofl/pneumofl-federation
    app_sha256: str = ""

    @property
    def finished(self) -> bool:
        """Whether the run has ended (in any way)."""
        return self.status.startswith("finished")

    @property
    def outcome(self) -> str:
        """``completed``, ``failed`` or ``stopped`` once finished, else the status."""
        return self.status.split(":", 1)[1] if ":" in self.status else self.status


class FlowerControl:
    """Runs ``flwr`` commands with a connection to the SuperLink at ``127.0.0.1:port``.

    Parameters
    ----------
    home
        The ``FLWR_HOME`` of this node (its ``config.toml`` is written here).
    port
        The SuperLink's (loopback) port.
    env
        The environment of the ``flwr`` processes (see :func:`~core.federated.processes.flower_environment`).
    root_certificates
        The federation CA when the SuperLink serves TLS; None for an insecure loopback SuperLink.
    """

    def __init__(self, home: Path, port: int, env: dict[str, str], root_certificates: Path | None = None) -> None:
        self.home, self.port, self.env = home, port, env
        home.mkdir(parents=True, exist_ok=True)
        security = (
            f"root-certificates = {json.dumps(str(root_certificates))}" if root_certificates else "insecure = true"
        )
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{port}"\n{security}\n',
            encoding="utf-8",
        )

    def _flwr(self, *args: str, timeout: float = 120.0) -> dict[str, Any]:
        command = ["flwr", *args, "--format", "json"]
        try:
            done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FlowerProcessError(f"`flwr {args[0]}` did not complete: {exc}") from exc
        try:
            reply = json.loads(done.stdout[done.stdout.find("{") :])
        except ValueError:
            reply = {"success": False, "error-message": (done.stdout + done.stderr).strip()[-2000:]}
        if not reply.get("success", False):
            message = reply.get("error-message") or (done.stdout + done.stderr).strip()[-2000:]
            raise FlowerProcessError(f"`flwr {' '.join(args[:2])}` failed: {message}")
        return reply

    def submit(self, run_config: dict[str, Any], work_dir: Path, app: str) -> int:
        """Submit ``app``; return Flower's run id.

        ``app`` is ``@publisher/name==x.y.z``: the SuperLink fetches it, with the sites' signatures, from the
        server's app hub (:mod:`core.federated.app_hub`).
        """
        work_dir.mkdir(parents=True, exist_ok=True)
        overrides = work_dir / "run_config.toml"
        overrides.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in run_config.items()), encoding="utf-8")
        reply = self._flwr("run", app, CONNECTION, "--run-config", str(overrides))
        return int(reply["run-id"])

    def status(self, run_id: int) -> RunStatus:
        """The run's current status."""
        reply = self._flwr("ls", CONNECTION, "--run-id", str(run_id), timeout=60.0)
        return _run_status(reply["runs"][0])

    def runs(self) -> dict[int, RunStatus]:
        """Every run the SuperLink holds, whoever submitted it, by run id (one ``flwr ls``)."""
        reply = self._flwr("ls", CONNECTION, timeout=60.0)
        return {status.run_id: status for status in map(_run_status, reply.get("runs", []))}

    def stop(self, run_id: int) -> None:
        """Ask the SuperLink to stop the run (its ServerApp is ended)."""
        self._flwr("stop", str(run_id), CONNECTION, timeout=60.0)

    def register_node(self, public_key: Path, name: str = "") -> str:
        """Enrol a site by its public node key; return the node id Flower gives it."""
        args = ["supernode", "register", str(public_key), CONNECTION]
        if name:
            args += ["--name", name]
        reply = self._flwr(*args, timeout=60.0)
        return str(reply.get("node-id", ""))

    def nodes(self) -> list[dict[str, Any]]:
        """The enrolled/connected SuperNodes as ``flwr supernode ls`` lists them."""
        return list(self._flwr("supernode", "ls", CONNECTION, timeout=60.0).get("nodes", []))


def _run_status(run: dict[str, Any]) -> RunStatus:
    """One run of ``flwr ls --format json``."""
    traffic = run.get("network-traffic") or {}
    return RunStatus(
        run_id=int(run["run-id"]),
        status=str(run.get("status", "")),
        details=str(run.get("status-details", "")),
        inbound_bytes=int(traffic.get("inbound-bytes", 0)),
        outbound_bytes=int(traffic.get("outbound-bytes", 0)),
        app=str(run.get("fab-id", "")),
        app_sha256=str(run.get("fab-hash", "")),
    )


def _toml(value: Any) -> str:
    """A TOML scalar: JSON's string escapes and number/boolean forms are valid TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))
