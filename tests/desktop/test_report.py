"""The run report, read the way a person would: a real tiny run trained once, then its HTML page and PDF."""

from __future__ import annotations

import argparse
import base64
import copy
import io
import os
import re
import subprocess
import sys
from html import escape
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import insert

from core.errors import PneumoFLError, RunNotFoundError
from core.events import EpochEnd
from core.persistence import Database
from core.persistence.metric_reads import final_stats
from core.persistence.models import metrics_table
from core.persistence.rows import COLUMNS, event_rows
from core.persistence.runs import create_run, finish_run
from core.stats.names import interval_text
from core.stats.operating_points import LABELS, OPERATING_POINTS
from core.training.recorded import train_and_record
from desktop.cli.report import add_report_command
from desktop.report import write_report
from tests.core.conftest import tiny_run_config
from tests.imaging import write_folder_dataset

ROOT = Path(__file__).resolve().parents[2]
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)" width="(\d+)"')
WARNING = "The model is not usable as is"
NO_STATS = "There are no final statistics for this run"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One real run (small CNN, 32 px, 2 epochs, temperature scaling) in a real SQLite file, and its stats."""
    folder = tmp_path_factory.mktemp("report")
    data = write_folder_dataset(folder / "xrays", per_class=24, size=32)
    config = tiny_run_config(data, experiment_name="report <tiny> & co", backbone="small_cnn", temperature_scaling=True)
    url = f"sqlite:///{folder / 'report.db'}"
    db = Database.open(url)
    result = train_and_record(config, db, work_dir=folder / "run")
    assert result.status == "completed", result.error
    with db.begin() as session:
        stats = final_stats(session, result.run_id)
    yield db, result.run_id, stats, url
    db.close()


@pytest.fixture(scope="module")
def html(recorded, tmp_path_factory):
    db, run_id, _, _ = recorded
    path = write_report(db, run_id, tmp_path_factory.mktemp("html") / "run.html")
    return path.read_text(encoding="utf-8")


def crafted_run(db: Database, stats: dict | None, *, role: str = "standalone", status: str = "completed") -> int:
    """A run written straight to the database with the given final statistics."""
    with db.begin() as session:
        run_id = create_run(session, experiment_name="crafted", role=role, config={"backbone": "resnet18"})
        finish_run(session, run_id, status=status, best_epoch=1, final_stats=stats, duration=12.0)
    return run_id


def report_text(db: Database, run_id: int, folder: Path) -> str:
    return write_report(db, run_id, folder / f"run{run_id}.html").read_text(encoding="utf-8")


def test_html_is_self_contained_and_its_charts_are_sharp_pngs(html):
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and "<script" not in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    for encoded, shown_width in DATA_URI.findall(html):
        image = Image.open(io.BytesIO(base64.b64decode(encoded)))
        image.verify()
        assert image.format == "PNG" and image.width >= 2 * int(shown_width) - 1  # sharp on a high-density screen
    assert "<style>" in html


def test_html_shows_each_metric_with_its_stored_interval(recorded, html):
    _, run_id, stats, _ = recorded
    for split in ("val", "test"):
        for metric in ("auroc", "recall", "specificity"):
            expected = interval_text(stats[split][metric], stats["intervals"][split].get(metric))
            assert f">{expected}<" in html, (split, metric, expected)
    assert "(" in interval_text(stats["val"]["auroc"], stats["intervals"]["val"]["auroc"])
    # The header names the run; the experiment name is escaped, never injected.
    assert f"Run {run_id}: report &lt;tiny&gt; &amp; co" in html and "<tiny>" not in html
    assert "small_cnn" in html and "32 x 32 pixels" in html
    counts = stats["samples"]["val"]
    negatives = counts["total"] - counts["positive"]
    assert f"{counts['total']} ({counts['positive']} pneumonia, {negatives} normal)" in html


def test_operating_points_are_listed_with_their_thresholds(recorded, html):
    _, _, stats, _ = recorded
    section = html[html.index("Operating points</h2>") : html.index("ROC curve")]
    for name in OPERATING_POINTS:
        point = stats["operating_points"][name]
        assert escape(LABELS[name]) in section
        assert f">{point['threshold']:.3f}<" in section
        recall = interval_text(point["test"]["recall"], point["intervals"]["test"].get("recall"))
        assert f">{recall}<" in section


def test_calibration_shows_temperature_and_values_before_scaling(recorded, html):
    _, _, stats, _ = recorded
    calibration = stats["calibration"]
    assert f"T = {calibration['temperature']:.3f}" in html
    assert f">{calibration['before_scaling']['val']['ece']:.4f}<" in html
    assert f">{calibration['test']['brier']:.4f}<" in html


def test_degenerate_model_gets_a_prominent_warning_and_a_good_one_does_not(recorded, tmp_path):
    db, _, stats, _ = recorded
    one_class = copy.deepcopy(stats)
    one_class["degenerate"] = True
    one_class["val"] |= {"cm_tp": 0, "cm_fp": 0, "cm_tn": 6, "cm_fn": 6, "recall": 0.0, "specificity": 1.0}
    text = report_text(db, crafted_run(db, one_class), tmp_path)
    assert WARNING in text and "(all NORMAL)" in text
    assert text.index(WARNING) < text.index("Summary</h2>")  # before anything else
    usable = copy.deepcopy(stats) | {"degenerate": False}
    assert WARNING not in report_text(db, crafted_run(db, usable), tmp_path)


def test_pdf_has_pages_and_embedded_charts(recorded, tmp_path):
    db, run_id, _, _ = recorded
    path = write_report(db, run_id, tmp_path / "run.PDF")
    data = path.read_bytes()
    assert data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 2  # an A4 page cannot hold four charts and tables
    assert len(re.findall(rb"/Subtype\s*/Image", data)) >= 4
    assert len(data) > 50_000
    assert not list(tmp_path.glob(".*partial"))


def test_run_without_final_stats_still_gets_its_header_and_curves(recorded, tmp_path):
    db, _, _, _ = recorded
    run_id = crafted_run(db, None, status="failed")
    with db.begin() as session:
        finish_run(session, run_id, status="failed", error_message="Out of memory at epoch 2.")
        for epoch, loss in ((1, 0.69), (2, 0.61)):
            event = EpochEnd(run_id=run_id, epoch=epoch, metrics={"train_loss": loss, "val_auroc": 0.5 + epoch / 10})
            session.execute(insert(metrics_table), [dict(zip(COLUMNS, row)) for row in event_rows(event, run_id)])
    text = report_text(db, run_id, tmp_path)
    assert NO_STATS in text and "Out of memory at epoch 2." in text
    assert "Training curves per epoch" in text and len(DATA_URI.findall(text)) == 1
    assert "Performance at" not in text
    bare = report_text(db, crafted_run(db, None, status="cancelled"), tmp_path)
    assert NO_STATS in bare and "No epoch was completed." in bare and "src=" not in bare


def test_older_and_server_runs_show_what_they_have(recorded, tmp_path):
    db, _, stats, _ = recorded
    metrics = {k: stats["val"][k] for k in ("recall", "specificity", "precision", "f1", "auroc", "accuracy")}
    old = {"val": metrics, "test": dict(metrics), "youden": {"threshold": 0.42, "val": metrics}}
    text = report_text(db, crafted_run(db, old), tmp_path)
    assert f">{metrics['auroc']:.3f}<" in text and ">0.420<" in text and "Youden" in text
    assert "Calibration</h2>" in text and "Not measured for this run." in text
    server = {k: v for k, v in copy.deepcopy(stats).items() if k != "test"}
    text = report_text(db, crafted_run(db, server, role="server"), tmp_path)
    assert "<th>Validation</th>" in text and "<th>Test</th>" not in text and "Best round" in text


def test_wrong_suffix_missing_folder_and_missing_run_are_sentences(recorded, tmp_path):
    db, run_id, _, _ = recorded
    wrong = tmp_path / "report.docx"
    with pytest.raises(PneumoFLError, match=re.escape(str(wrong))) as caught:
        write_report(db, run_id, wrong)
    assert ".html" in str(caught.value) and ".pdf" in str(caught.value)
    missing = tmp_path / "no such folder" / "report.html"
    with pytest.raises(PneumoFLError, match=re.escape(str(missing))):
        write_report(db, run_id, missing)
    with pytest.raises(RunNotFoundError):
        write_report(db, 999_999, tmp_path / "report.html")
    assert not list(tmp_path.iterdir())


def test_cli_command_writes_the_report_and_says_where(recorded, tmp_path, capsys):
    _, run_id, _, url = recorded
    parser = argparse.ArgumentParser()
    add_report_command(parser.add_subparsers())
    output = tmp_path / "r.pdf"
    args = parser.parse_args(["report", str(run_id), "-o", str(output), "--db", url])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == f"Report of run {run_id} written to {output}."
    assert output.read_bytes().startswith(b"%PDF")


def test_pdf_is_rendered_without_a_display_as_on_a_headless_server(tmp_path):
    # A fresh process without a display or a Qt platform: the report creates its own off-screen application.
    # Only the PDF module is loaded (by its path), which keeps the process free of torch and quick.
    script = (
        "import importlib.util, os\n"
        "spec = importlib.util.spec_from_file_location('pdf', 'desktop/report/pdf.py')\n"
        "pdf = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(pdf)\n"
        "data = pdf.pdf_bytes('<h1>Run 1</h1><p>Headless.</p>', {}, title='t')\n"
        "assert data.startswith(b'%PDF'), data[:20]\n"
        "print(os.environ['QT_QPA_PLATFORM'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "offscreen"
