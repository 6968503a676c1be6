"""A site's warm training worker, as a real process: only its secret drives it, and a killed one comes back."""

from __future__ import annotations

import json
import os
import socket
import stat
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path

import psutil
import pytest

from core.federated.processes import flower_environment
from core.federated.settings import SITE_SETTINGS_ENV, SiteSettings
from core.federated.site_worker import ADDRESS_FILE, KEY_FILE, SiteWorker, WorkerUnavailable, train_on_worker


def _wait_ready(worker: SiteWorker, old_port: int | None = None) -> dict:
    """The worker's address once it listens (a new one after a restart)."""
    request = {"server_round": 0}  # incomplete: the worker answers with an error, which proves it listens
    answer = train_on_worker(worker.folder, request, timeout=30)
    assert answer["error"] == "failed" and answer["message"] == "local training failed"
    address = json.loads((worker.folder / ADDRESS_FILE).read_text())
    assert address["port"] != old_port
    return address


@pytest.fixture()
def worker(tmp_path: Path):
    settings = SiteSettings(site_name="north", data_path=str(tmp_path / "none"), db_url=f"sqlite:///{tmp_path}/x.db")
    env = flower_environment(tmp_path / "flwr-home", {SITE_SETTINGS_ENV: str(settings.save(tmp_path / "s.json"))})
    worker = SiteWorker(tmp_path / "worker", env, tmp_path / "logs" / "worker.log")
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def test_only_the_sites_secret_drives_the_worker(worker: SiteWorker) -> None:
    address = _wait_ready(worker)
    assert stat.S_IMODE(os.stat(worker.folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(worker.folder / KEY_FILE).st_mode) == 0o600
    # Another local user's process, or anything that found the port, without the secret.
    with pytest.raises(AuthenticationError):
        Client(("127.0.0.1", address["port"]), authkey=b"a guess" * 5)
    # A peer that connects and says nothing holds up nobody.
    with socket.create_connection(("127.0.0.1", address["port"])):
        assert train_on_worker(worker.folder, {"server_round": 1}, timeout=30)["error"] == "failed"
    # Refused, and still serving the site.
    answer = train_on_worker(worker.folder, {"server_round": 2}, timeout=30)
    assert answer["error"] == "failed" and answer["worker_rss_mb"] > 50  # torch is loaded: it is warm
    assert "refused a connection" in worker.log_path.read_text()


def test_a_killed_worker_is_started_again_and_stopping_leaves_nothing(worker: SiteWorker) -> None:
    first = _wait_ready(worker)
    psutil.Process(first["pid"]).kill()  # as the OOM killer would
    second = _wait_ready(worker, old_port=first["port"])  # the next round waits for the new worker
    assert second["pid"] != first["pid"] and worker.restarts == 1
    worker.stop()
    assert not psutil.pid_exists(second["pid"]) or psutil.Process(second["pid"]).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(WorkerUnavailable):
        train_on_worker(worker.folder, {"server_round": 3}, timeout=1, connect_wait=1.0)
