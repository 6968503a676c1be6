"""`pneumofl predict` and `pneumofl model export` as processes: readings, heatmaps, CSV, exported models."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from core.config import RunConfig
from core.persistence import Database
from core.training.recorded import train_and_record
from tests.e2e.cli import pneumofl
from tests.imaging import write_folder_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_folder_dataset(tmp_path_factory.mktemp("predict-xrays"), per_class=16, size=32)


def test_predict_export_and_predict_with_the_export(dataset, env, tmp_path):
    # Trained in this process (the CLI's own `train` is tested in test_cli.py); the run's checkpoint path is recorded.
    with Database.open(env["PNEUMOFL_DB_URL"]) as db:
        config = RunConfig(data_path=str(dataset), backbone="small_cnn", image_size=32, epochs=2, batch_size=8)
        result = train_and_record(config.with_overrides(max_threads=2), db, work_dir=tmp_path / "run")
    assert result.run_id == 1 and result.status == "completed"

    readings, cams = tmp_path / "readings.csv", tmp_path / "cams"
    proc = pneumofl(
        "predict", "--run", "1", dataset / "PNEUMONIA", "--operating-point", "sens95",
        "--cam", cams, "-o", readings, "--no-progress", env=env, check=0,
    )  # fmt: skip
    assert "16 image(s) read with run 1" in proc.stdout and "16 reading(s) recorded" in proc.stderr
    rows = list(csv.DictReader(readings.open()))
    assert len(rows) == 16 and {r["operating_point"] for r in rows} == {"sens95"}
    assert all(
        r["decision"] == ("PNEUMONIA" if float(r["probability"]) > float(r["threshold"]) else "NORMAL") for r in rows
    )
    heatmap = Image.open(rows[0]["heatmap"])
    assert heatmap.mode == "RGB" and heatmap.size == (512, 512)

    exported = tmp_path / "exported"  # TorchScript exports go the same way (tests/core/inference/test_inference.py)
    proc = pneumofl("model", "export", "1", "--format", "onnx", "-o", exported, env=env, check=0)
    assert "Checked on 4 images" in proc.stdout  # the run's test split: 15% of 32
    card = json.loads((exported / "pneumofl-run1.onnx.card.json").read_text())
    assert card["verification"]["source"] == "of the run's test images" and card["verification"]["images"] == 4
    assert card["model"]["backbone"] == "small_cnn" and str(dataset) not in json.dumps(card)

    again = tmp_path / "again.csv"
    pneumofl(
        "predict", "--model", exported / "pneumofl-run1.onnx", dataset / "PNEUMONIA", "--operating-point", "sens95",
        "-o", again, "--no-progress", env=env, check=0,
    )  # fmt: skip
    for a, b in zip(rows, csv.DictReader(again.open())):
        assert abs(float(a["probability"]) - float(b["probability"])) <= 1e-4 and a["decision"] == b["decision"]

    # A mistake is one sentence and exit code 2 (the other mistakes are tested in tests/core/inference/test_inference.py).
    bad_point = pneumofl("predict", "--run", "1", dataset, "--operating-point", "sens90", env=env, check=2)
    assert "'sens90' is neither one of youden, sens95, spec95, default" in bad_point.stderr
