"""`pneumofl view` opens any run recorded on another node, through its dashboard API and the viewer token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.broadcast.remote_runs import RemoteRuns, history_from_snapshot
from core.errors import PneumoFLError
from core.persistence import Database
from core.training.recorded import train_and_record
from tests.core.conftest import tiny_run_config
from tests.imaging import write_folder_dataset
from tests.web.conftest import TOKEN

ROOT = Path(__file__).parents[2]


def test_view_lists_and_prints_a_recorded_run_of_a_remote_node(served, db_url, tmp_path):
    data = write_folder_dataset(tmp_path / "x", per_class=12, size=32)
    db = Database.open(db_url)
    try:
        config = tiny_run_config(data, backbone="small_cnn", experiment_name="on the other node", max_threads=1)
        run_id = train_and_record(config, db, work_dir=tmp_path / "c").run_id
    finally:
        db.close()
    url = served.hub.url
    env = os.environ | {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_STATE_HOME": str(tmp_path / "state")}

    def view(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "desktop", "view", url, "--token", TOKEN, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Traceback" not in done.stdout + done.stderr, done.stderr[-2000:]
        return done

    listed = view("--list")
    assert listed.returncode == 0 and "on the other node" in listed.stdout and str(run_id) in listed.stdout
    shown = view("--run", str(run_id), "--text")
    assert shown.returncode == 0, shown.stderr
    assert "on the other node" in shown.stdout and "AUROC" in shown.stdout and "val_auroc" in shown.stdout

    # The same API from Python: the snapshot rebuilds the dashboard's history; a wrong token is a sentence.
    history = history_from_snapshot(RemoteRuns(url, TOKEN).snapshot(run_id))
    assert history.run.experiment_name == "on the other node" and len(history.epoch_series["val_auroc"][0]) == 2
    try:
        RemoteRuns(url, "wrong-token").list()
    except PneumoFLError as exc:
        assert "refused the viewer token" in str(exc)
    else:
        raise AssertionError("a wrong token was accepted")
