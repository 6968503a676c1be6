"""The federation commands as a user runs them: `pneumofl federate` end to end, Ctrl-C/SIGTERM, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.persistence import Database
from core.persistence.runs import list_runs
from tests.federation.conftest import processes_under

ROOT = Path(__file__).parents[2]


def cli_env(tmp_path: Path) -> dict[str, str]:
    return os.environ | {
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PNEUMOFL_DB_URL": f"sqlite:///{tmp_path / 'runs.db'}",
    }


def pneumofl(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "desktop", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    for text in (done.stdout, done.stderr):  # never a traceback on a user's console, whatever the input
        assert "Traceback" not in text, text[-3000:]
    return done


def test_sigterm_cancels_the_federation_and_leaves_no_process(tmp_path, fl_data, postgres_server):
    db_url = postgres_server.create_database()
    work = tmp_path / "work"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "desktop",
            "federate",
            "--data",
            str(fl_data),
            "--sites",
            "2",
            "--rounds",
            "5",
            "--local-epochs",
            "1",
            "--image-size",
            "32",
            "--batch-size",
            "8",
            "--db",
            db_url,
            "--work-dir",
            str(work),
        ],
        env=cli_env(tmp_path),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "sent its update" in line:  # round 1 is under way: the sites are training
                break
        assert any("sent its update" in ln for ln in lines), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
        lines.append(out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(lines)
    assert proc.returncode == 130, text
    assert "Stopping the federation" in text and "Federation cancelled" in text
    assert processes_under(work) == [], "quitting left Flower processes running"
    db = Database.open(db_url)
    try:
        with db.begin() as s:
            runs = list_runs(s, limit=10)
    finally:
        db.close()
    server = [r for r in runs if r.role == "server"]
    assert len(server) == 1 and server[0].status == "cancelled"
    assert all(r.status == "cancelled" for r in runs if r.role == "site")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["federate", "--sites", "1"], "--sites must be 2 or more"),
        (["federate", "--sites", "2", "--min-sites", "3"], "--min-sites 3 is more than --sites 2"),
        (["federate", "--rounds", "0"], "Federation setting 'rounds' must be at least 1"),
        (["federate", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none"], "127.0.0.1:1"),
        (
            ["server", "start", "--eval-data", ".", "--insecure", "--listen", "0.0.0.0:9092"],
            "--insecure is only for 127.0.0.1",
        ),
        (["server", "start", "--eval-data", "."], "Give --certs DIR"),
        (["server", "start", "--insecure", "--listen", "127.0.0.1:9092"], "Give the server's held-out images"),
        (["server", "start", "--insecure", "--listen", "127.0.0.1:9092", "--resume", "99"], "Run 99 does not exist"),
        (
            ["server", "start", "--insecure", "--listen", "127.0.0.1:9092", "--resume", "1", "--rounds", "9"],
            "leave out --rounds",
        ),
        (
            ["server", "start", "--eval-data", ".", "--certs", "/nonexistent-certs"],
            "/nonexistent-certs/ca.pem is missing",
        ),
        (
            ["server", "start", "--eval-data", "/nonexistent-eval", "--insecure", "--listen", "127.0.0.1:9092"],
            "--eval-data /nonexistent-eval does not exist",
        ),
        (
            ["client", "join", "--server", "fl.example.org:9092", "--data", ".", "--insecure"],
            "--insecure is only for a server on 127.0.0.1",
        ),
        (["client", "join", "--server", "fl.example.org:9092", "--data", "."], "--ca"),
        (["client", "join", "--server", "nonsense", "--data", ".", "--insecure"], "HOST:PORT"),
        (
            ["client", "join", "--server", "127.0.0.1:9092", "--data", "/nonexistent-site", "--insecure"],
            "/nonexistent-site",
        ),
        (["certs", "init", "--out", "x"], "--server-host"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    done = pneumofl(*args, env=cli_env(tmp_path))
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_certs_init_then_add_site(tmp_path):
    env = cli_env(tmp_path)
    done = pneumofl(
        "certs", "init", "--out", str(tmp_path / "fed"), "--server-host", "fl.example.org", "--sites", "north", env=env
    )
    assert done.returncode == 0, done.stderr
    assert "Site north: give it ca.pem" in done.stdout and "fingerprint" in done.stdout
    again = pneumofl("certs", "init", "--out", str(tmp_path / "fed"), "--server-host", "fl.example.org", env=env)
    assert again.returncode != 0 and "--force" in again.stderr
    added = pneumofl("certs", "add-site", "south", "--out", str(tmp_path / "fed"), env=env)
    assert added.returncode == 0 and (tmp_path / "fed" / "nodes" / "south.key").is_file()


def test_unusable_evaluation_data_is_named_before_any_process_starts(tmp_path):
    empty = tmp_path / "held-out"
    empty.mkdir()
    work = tmp_path / "work"
    done = pneumofl(
        "server",
        "start",
        "--insecure",
        "--listen",
        "127.0.0.1:9",
        "--eval-data",
        str(empty),
        "--work-dir",
        str(work),
        env=cli_env(tmp_path),
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert str(empty) in done.stderr and "Traceback" not in done.stderr
    assert not (work / "logs").exists(), "no Flower process was started"
