"""The run report: every stored version reads into one typed report, which writes the current document back."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from core.reporting import STATS_VERSION, ModelRecord, RunReport
from core.reporting.evaluate import build_report, evaluate_report


def _scores(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    targets = (torch.rand(n, generator=generator) < 0.5).int()
    logits = targets * 1.5 - 0.75 + torch.randn(n, generator=generator)
    return logits, targets


def test_a_current_document_reads_and_writes_back_unchanged():
    val, test = _scores(120, 1), _scores(120, 2)
    probs = {split: (torch.sigmoid(z), y) for split, (z, y) in {"val": val, "test": test}.items()}
    document = build_report(probs, 0.5, temperature=1.3, uncalibrated=probs, resamples=50).to_dict()
    document["model"] = {"backbone": "small_cnn", "image_size": 32, "weights_sha256": "ab" * 32, "checkpoint": None}
    document["privacy"] = {
        "epsilon": 3.0,
        "delta": 1e-5,
        "releases": 2,
        "noise_multiplier": 1.0,
        "clipping": "fixed",
        "clipping_norm": 1.0,
        "accounting": "Renyi DP",
    }
    report = RunReport.from_dict(document)
    assert report.to_dict() == document and document["version"] == STATS_VERSION
    assert report.points()[0].name == "youden" and report.has_intervals
    assert report.metrics("test").text("auroc").count("(") == 1
    per_round = build_report(probs, 0.5, resamples=0).to_dict()
    assert RunReport.from_dict(per_round).to_dict() == per_round and per_round["intervals"] == {}


def test_runs_without_a_version_only_kept_youden_and_become_an_operating_point():
    old = {"val": {"recall": 0.9}, "test": {"recall": 0.8}, "youden": {"threshold": 0.42, "val": {"recall": 0.95}}}
    report = RunReport.from_dict(old)
    assert [p.name for p in report.points()] == ["youden"]
    assert report.operating_points["youden"].threshold == 0.42
    assert report.operating_points["youden"].metrics("val").get("recall") == 0.95
    assert report.threshold is None and report.threshold_or(0.5) == 0.5
    upgraded = report.to_dict()
    assert upgraded["operating_points"]["youden"]["val"] == {"recall": 0.95}
    assert upgraded["youden"] == old["youden"] and upgraded["version"] == STATS_VERSION
    assert RunReport.from_dict(upgraded) == report
    rebuilt = {"val": {"recall": 0.5}, "other": {"lr": 0.1}}  # rebuilt from final_epoch rows
    assert RunReport.from_dict(rebuilt).to_dict()["other"] == {"lr": 0.1}


@pytest.mark.parametrize("document", [None, {}, {"version": 1}])
def test_no_statistics_is_an_empty_report(document):
    report = RunReport.from_dict(document)
    assert not report and report.to_dict() == {} and report.evaluated == []


def test_only_privacy_stays_only_privacy():
    document = {"privacy": {"epsilon": 1.0, "delta": 1e-5, "releases": 3}}
    written = RunReport.from_dict(document).to_dict()
    assert set(written) == {"privacy"} and written["privacy"]["epsilon"] == 1.0


def test_evaluate_report_scales_on_validation_and_adds_model_and_samples():
    logits = {"val": _scores(150, 3), "test": _scores(150, 4)}
    model = ModelRecord(backbone="small_cnn", image_size=32, weights_sha256="cd" * 32)
    report = evaluate_report(logits, 0.5, temperature_scaling=True, resamples=20, model=model, samples={})
    assert report.model == model and report.calibration is not None and report.calibration.temperature
    assert set(report.calibration.before_scaling) == {"val", "test"}
    plain = evaluate_report(logits, 0.5, temperature_scaling=False, resamples=0)
    assert plain.calibration is not None and plain.calibration.temperature is None and not plain.has_intervals
    one_class = {"val": (torch.zeros(10), torch.zeros(10, dtype=torch.int))}
    assert not evaluate_report(one_class, 0.5, temperature_scaling=True, model=model)


def test_report_replace_keeps_the_document_typed():
    report = build_report({"val": (torch.sigmoid(_scores(80, 5)[0]), _scores(80, 5)[1])}, 0.5, resamples=0)
    assert report.model is None
    record = ModelRecord(backbone="resnet18", image_size=64, weights_sha256="ef" * 32, checkpoint="/x/best.ckpt")
    assert dataclasses.replace(report, model=record).to_dict()["model"]["checkpoint"] == "/x/best.ckpt"


def test_the_report_types_import_without_torch():
    code = "import sys, core.reporting; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
