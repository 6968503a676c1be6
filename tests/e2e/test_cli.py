"""The headless CLI as the site's IT person runs it: real processes, real SQLite files, exit codes and messages."""

import csv
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.model.checkpoint import read_checkpoint, weights_sha256
from core.persistence import Database
from core.persistence.artifacts import artifact_file
from core.persistence.runs import get_run
from tests.e2e.cli import pneumofl
from tests.imaging import write_folder_dataset

TINY = ["--image-size", "32", "--batch-size", "8", "--threads", "1", "--no-progress"]
SMALL_SIX_EPOCHS = ["--epochs", "6", "--patience", "0", "--backbone", "small_cnn"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_folder_dataset(tmp_path_factory.mktemp("cli-xrays"), per_class=16, size=32)


def test_train_list_show_export(dataset, env, tmp_path):
    proc = pneumofl("train", "--data", dataset, "--epochs", "2", "--name", "cli-run", *TINY, env=env, check=0)
    assert "Sensitivity (recall)" in proc.stdout and "Run 1: completed" in proc.stdout
    assert "NORMAL 16, PNEUMONIA 16" in proc.stderr  # the dataset summary came first

    listed = json.loads(pneumofl("runs", "list", "--format", "json", env=env, check=0).stdout)
    assert [(r["id"], r["experiment_name"], r["status"], r["best_epoch"] is not None) for r in listed] == [
        (1, "cli-run", "completed", True)
    ]
    table = pneumofl("runs", "list", env=env, check=0).stdout
    assert "cli-run" in table and "completed" in table and "1 of 1 run(s) shown." in table

    shown = pneumofl("runs", "show", "1", env=env, check=0).stdout
    assert "val_recall" in shown and "Specificity" in shown
    assert "95% bootstrap intervals" in shown and "Sensitivity >= 0.95" in shown and "Calibration:" in shown

    out_csv, out_json = tmp_path / "run.csv", tmp_path / "all.json"
    pneumofl("runs", "export", "1", "--format", "csv", "-o", out_csv, env=env, check=0)
    rows = list(csv.DictReader(out_csv.open()))
    assert list(rows[0]) == ["run", "name", "value", "step", "dataset_type", "context", "site", "round"]
    epoch_recalls = [r for r in rows if r["name"] == "val_recall" and r["context"] == "epoch_end"]
    assert [r["step"] for r in epoch_recalls] == ["1", "2"]
    pneumofl("runs", "export", "--all", "--format", "json", "-o", out_json, env=env, check=0)
    exported = json.loads(out_json.read_text())
    assert exported["runs"][0]["run"]["id"] == 1 and exported["runs"][0]["final_stats"]["val"]

    kept = json.loads(pneumofl("artifacts", "list", "--format", "json", env=env, check=0).stdout)
    assert [(a["run"], a["kind"]) for a in kept] == [(1, "best"), (1, "last")] and kept[0]["size"] > 0
    assert "Kept: best (best.ckpt" in shown
    refused = pneumofl("runs", "delete", "1", env=env, check=2)  # no terminal to ask: --yes is needed
    assert "add --yes" in refused.stderr
    deleted = pneumofl("runs", "delete", "1", "--yes", env=env, check=0).stdout
    assert deleted.startswith("Deleted run(s) 1 and 2 kept model(s)")
    assert json.loads(pneumofl("runs", "list", "--format", "json", env=env, check=0).stdout) == []
    assert "No artifacts." in pneumofl("artifacts", "list", env=env, check=0).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "/no/such/folder"], "/no/such/folder"),
        (["train"], "--data PATH"),
        (["train", "--demo", "--epochs", "0"], "'epochs'"),
        (["runs", "show", "99"], "Run 99 does not exist"),
        (["runs", "list", "--sort", "colour"], "colour"),
        (["data", "check", "/no/such/folder"], "/no/such/folder"),
        (["data", "check", ".", "--image-size", "5"], "'image_size'"),
        (["data", "check", "labels.csv", "--csv-image-column", "x"], "labels.csv"),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(args, message, env):
    proc = pneumofl(*args, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_single_class_dataset_is_refused_before_training(tmp_path, env):
    root = write_folder_dataset(tmp_path / "one", per_class=4, size=32)
    for f in (root / "NORMAL").iterdir():
        f.unlink()
    (root / "NORMAL").rmdir()
    proc = pneumofl("train", "--data", root, *TINY, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "NORMAL" in proc.stderr
    db_path = Path(env["PNEUMOFL_DB_URL"].removeprefix("sqlite:///"))
    if db_path.exists():  # nothing was recorded for a run that never started
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_unreachable_database_is_one_sentence(env, tmp_path):
    proc = pneumofl("runs", "list", "--db", "postgresql+psycopg://pneumo:secret@127.0.0.1:9/none", env=env)
    assert proc.returncode == 2
    assert "127.0.0.1" in proc.stderr and "secret" not in proc.stderr and "Traceback" not in proc.stderr


def test_kill_9_during_a_run_then_train_resume_completes_it_in_place(dataset, env, tmp_path):
    db_path = Path(env["PNEUMOFL_DB_URL"].removeprefix("sqlite:///"))
    child = subprocess.Popen(
        [sys.executable, "-m", "desktop", "train", "--data", str(dataset), *SMALL_SIX_EPOCHS, *TINY],
        env=env,
        cwd=Path(__file__).parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        epochs: list[int] = []
        while time.monotonic() < deadline and len(epochs) < 2:
            time.sleep(0.1)
            epochs = _recorded_epochs(db_path)
        assert len(epochs) >= 2, "the run never recorded two epochs"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    survived = _recorded_epochs(db_path)
    assert survived[:2] == [1, 2] and len(survived) < 6
    before = _epoch_values(db_path)
    db = Database.open(env["PNEUMOFL_DB_URL"])  # the next start marks the dead run
    try:
        with db.begin() as session:
            assert get_run(session, 1).status == "interrupted"
    finally:
        db.close()

    refused = pneumofl("train", "--resume", "1", "--epochs", "9", env=env, check=2)
    assert "leave out --epochs" in refused.stderr

    proc = pneumofl("train", "--resume", "1", "--no-progress", env=env, check=0)
    assert "Run 1 resumes after epoch" in proc.stderr and "Run 1: completed" in proc.stdout
    assert _recorded_epochs(db_path) == [1, 2, 3, 4, 5, 6]
    after = _epoch_values(db_path)
    assert {k: v for k, v in after.items() if k[0] <= 2} == {k: v for k, v in before.items() if k[0] <= 2}
    db = Database.open(env["PNEUMOFL_DB_URL"])
    try:
        with db.begin() as session:
            run = get_run(session, 1)
            best = artifact_file(session, 1, "best")
    finally:
        db.close()
    assert run.status == "completed" and run.final_stats and run.resumes and run.resumes[0]["from_epoch"] in (1, 2, 3)
    assert best is not None
    assert run.final_stats["model"]["weights_sha256"] == weights_sha256(read_checkpoint(best)["state_dict"])
    shown = pneumofl("runs", "show", "1", env=env, check=0).stdout
    assert "Resumed after epoch" in shown and "interrupted" in shown


def _epoch_values(db_path: Path) -> dict[tuple[int, str], float]:
    with sqlite3.connect(db_path, timeout=5) as conn:
        rows = conn.execute(
            "SELECT step, metric_name, metric_value FROM run_metrics WHERE context='epoch_end'"
        ).fetchall()
    return {(step, name): value for step, name, value in rows}


def _recorded_epochs(db_path: Path) -> list[int]:
    if not db_path.exists():
        return []
    try:
        with sqlite3.connect(db_path, timeout=5) as conn:
            rows = conn.execute(
                "SELECT DISTINCT step FROM run_metrics WHERE metric_name='val_recall' AND context='epoch_end' "
                "ORDER BY step"
            ).fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    return [r[0] for r in rows]


def test_the_console_gets_sentences_never_tracebacks():
    import io
    import logging

    from desktop.cli.common import SentenceFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SentenceFormatter("%(levelname)s: %(message)s"))
    log = logging.getLogger("pneumofl.test-console")
    log.addHandler(handler)
    try:
        raise OSError("disk full")
    except OSError:
        log.exception("writing %s failed", "run.csv")
    finally:
        log.removeHandler(handler)
    assert stream.getvalue() == "ERROR: writing run.csv failed\n"


def test_a_closed_pipe_ends_quietly(env, tmp_path):
    """`pneumofl runs list --format json | head -1` on many runs: no traceback when head stops reading."""
    with Database.open(env["PNEUMOFL_DB_URL"]) as db, db.begin() as session:
        from core.persistence.runs import create_run

        for i in range(300):
            create_run(session, experiment_name=f"run-{i}", config={"note": "x" * 200})
    proc = subprocess.Popen(
        [sys.executable, "-m", "desktop", "runs", "list", "--format", "json", "--limit", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=Path(__file__).parents[2],
    )
    proc.stdout.read(100)
    proc.stdout.close()  # as `head` does once it has its lines
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in stderr and "Error" not in stderr, stderr
