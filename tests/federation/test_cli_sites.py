"""`pneumofl server start` and two `pneumofl client join` on 127.0.0.1, as a site's IT person runs them: approvals
travel at join, an unattended site approves within its policy, a headless one declines and says how to approve."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from core.audit import kinds
from core.audit.entries import entries
from core.federated.processes import flower_processes_under, free_port
from core.persistence import Database
from tests.federation.test_cli_federation import ROOT, cli_env

PLAN = [
    "--rounds",
    "1",
    "--local-epochs",
    "1",
    "--min-sites",
    "2",
    "--round-timeout",
    "90",
    "--image-size",
    "32",
    "--batch-size",
    "8",
]


def start(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w", encoding="utf-8") as handle:  # the child keeps its own copy of the file
        return subprocess.Popen(
            [sys.executable, "-m", "desktop", *args],
            env=env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )


def test_an_unattended_site_approves_and_a_headless_one_declines(tmp_path, fl_data):
    env = cli_env(tmp_path)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    address = f"127.0.0.1:{free_port()}"
    logs = {name: tmp_path / f"{name}.log" for name in ("server", "north", "south")}
    procs: list[subprocess.Popen] = []
    try:
        # The sites start first, as headless nodes often do: they keep trying until the server listens.
        for name, extra in (("north", ["--approve-within-policy"]), ("south", [])):
            site_options = ["--server", address, "--data", str(fl_data), "--insecure", "--name", name]
            site_options += ["--threads", "1", "--db", db, "--work-dir", str(tmp_path / name), *extra]
            procs.append(start("client", "join", *site_options, env=env, log=logs[name]))
        deadline = time.monotonic() + 120
        while not all("does not answer yet" in logs[name].read_text() for name in ("north", "south")):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), logs["north"].read_text()
            time.sleep(0.5)
        server_options = ["--insecure", "--listen", address, "--eval-data", str(fl_data), *PLAN, "--db", db]
        server = start(
            "server", "start", *server_options, "--work-dir", str(tmp_path / "server"), env=env, log=logs["server"]
        )
        procs.append(server)
        server.wait(timeout=240)
        deadline = time.monotonic() + 30
        while "the plan of Flower run" not in logs["south"].read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    said = {name: path.read_text(encoding="utf-8") for name, path in logs.items()}
    for text in said.values():
        assert "Traceback" not in text, text[-3000:]
    assert server.returncode == 1, said["server"]
    assert "Approved by: north, south." in said["server"]
    assert "site south declined by site policy: Declined: nobody at this site could approve the plan" in said["server"]
    assert "--approve-within-policy" in said["south"] and "Declined the plan of Flower run" in said["south"]
    assert "Approved the plan of Flower run" in said["north"]
    assert "recorded the approval of site 'north'" in said["north"]
    assert flower_processes_under(tmp_path) == []
    database = Database.open(db, migrate=False)
    try:
        with database.begin() as session:
            decided = {
                e.kind: e.details["site"] for e in entries(session, kinds=[kinds.PLAN_APPROVED, kinds.PLAN_DECLINED])
            }
    finally:
        database.close()
    assert decided == {kinds.PLAN_APPROVED: "north", kinds.PLAN_DECLINED: "south"}
