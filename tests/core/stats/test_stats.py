"""Operating points, bootstrap intervals and calibration against independent plain-Python arithmetic."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from core.reporting.evaluate import build_report
from core.stats.bootstrap import bootstrap_intervals, resample_counts, weighted_auroc
from core.stats.calibration import apply_temperature, calibration_summary, fit_temperature
from core.stats.operating_points import choose_thresholds
from core.training.evaluation import metrics_at


def _scores(n: int, seed: int = 0, separation: float = 0.35) -> tuple[torch.Tensor, torch.Tensor]:
    rng = random.Random(seed)
    labels = [int(rng.random() < 0.4) for _ in range(n)]
    probs = [min(1.0, max(0.0, rng.random() * 0.65 + separation * y)) for y in labels]
    probs = [round(p, 2) for p in probs]  # ties, as a real model's rounded outputs have
    return torch.tensor(probs), torch.tensor(labels)


def _rates(probs: list[float], labels: list[int], t: float) -> tuple[float, float]:
    tp = sum(p > t and y == 1 for p, y in zip(probs, labels))
    tn = sum(p <= t and y == 0 for p, y in zip(probs, labels))
    positives = sum(labels)
    return tp / positives, tn / (len(labels) - positives)


def test_operating_points_are_the_best_thresholds_an_exhaustive_search_finds():
    probs, labels = _scores(300)
    p, y = probs.tolist(), labels.tolist()
    candidates = [-1.0, *sorted(set(p))]  # "above t": every distinct score, and below all of them
    rates = {t: _rates(p, y, t) for t in candidates}
    chosen = choose_thresholds(probs, labels)

    best_j = max(s + c - 1 for s, c in rates.values())
    sens, spec = _rates(p, y, chosen["youden"])
    assert sens + spec - 1 == pytest.approx(best_j, abs=1e-9)

    sens, spec = _rates(p, y, chosen["sens95"])
    assert sens >= 0.95 and spec == pytest.approx(max(c for s, c in rates.values() if s >= 0.95))

    sens, spec = _rates(p, y, chosen["spec95"])
    assert spec >= 0.95 and sens == pytest.approx(max(s for s, c in rates.values() if c >= 0.95))
    # torchmetrics counts the same decisions at the chosen threshold (no off-by-one at tied scores).
    metrics = metrics_at(probs, labels, chosen["youden"])
    assert (metrics["recall"], metrics["specificity"]) == pytest.approx(_rates(p, y, chosen["youden"]))


def _mann_whitney(probs: list[float], labels: list[int], weights: list[float]) -> float:
    wins = total = 0.0
    for pi, yi, wi in zip(probs, labels, weights):
        if yi != 1 or not wi:
            continue
        for pj, yj, wj in zip(probs, labels, weights):
            if yj == 0 and wj:
                wins += wi * wj * (1.0 if pi > pj else 0.5 if pi == pj else 0.0)
                total += wi * wj
    return wins / total


def test_resampled_auroc_is_the_mann_whitney_statistic_of_the_resample():
    probs, labels = _scores(60, seed=3)
    counts = resample_counts(labels.int(), 3, torch.Generator().manual_seed(1))
    # Stratified: every resample keeps the split's number of positives and negatives.
    assert counts[:, labels == 1].sum(dim=1).tolist() == [float(labels.sum())] * 3
    assert counts.sum(dim=1).tolist() == [60.0] * 3
    aurocs = weighted_auroc(probs.double(), labels.int(), counts)
    for row, value in zip(counts.tolist(), aurocs.tolist()):
        assert value == pytest.approx(_mann_whitney(probs.tolist(), labels.tolist(), row), abs=1e-12)
    ones = torch.ones(1, 60, dtype=torch.float64)
    assert float(weighted_auroc(probs.double(), labels.int(), ones)) == pytest.approx(
        float(binary_auroc(probs, labels))
    )


def test_intervals_hold_the_estimate_are_seeded_and_narrow_with_more_data():
    small, large = _scores(120, seed=5), _scores(3000, seed=5)
    widths = []
    for probs, labels in (small, large):
        (interval,) = bootstrap_intervals(probs, labels, [0.5])
        point = metrics_at(probs, labels, 0.5)
        for name, (low, high) in interval.items():
            assert low <= point[name] <= high, name
        widths.append(interval["auroc"][1] - interval["auroc"][0])
        assert bootstrap_intervals(probs, labels, [0.5]) == [interval]  # same predictions, same interval
    assert widths[1] < widths[0] / 3  # ~sqrt(25) narrower


def test_calibration_matches_plain_arithmetic():
    probs, labels = _scores(500, seed=7)
    probs = (probs * 0.99 + 0.004).clamp(0, 1)  # off the bin edges, where float32 and float64 disagree
    summary = calibration_summary(probs, labels)
    p, y = probs.tolist(), labels.tolist()
    assert summary["brier"] == pytest.approx(sum((a - b) ** 2 for a, b in zip(p, y)) / len(p), rel=1e-5)
    bins: dict[int, list[int]] = {}
    for i, value in enumerate(p):
        bins.setdefault(min(int(value * 10), 9), []).append(i)
    ece = sum(
        len(ix) / len(p) * abs(sum(p[i] for i in ix) / len(ix) - sum(y[i] for i in ix) / len(ix))
        for ix in bins.values()
    )
    assert summary["ece"] == pytest.approx(ece, abs=1e-5)
    assert summary["bins"]["count"] == [len(bins.get(b, [])) for b in range(10)]
    for b, ix in bins.items():
        assert summary["bins"]["observed"][b] == pytest.approx(sum(y[i] for i in ix) / len(ix))


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_the_log_loss():
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(6000, generator=generator) * 4  # over-confident logits: the truth is sigmoid(z / 2.5)
    labels = (torch.rand(6000, generator=generator) < torch.sigmoid(logits / 2.5)).int()
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(2.5, abs=0.25)

    def log_loss(t: float) -> float:
        q = apply_temperature(logits, t).double().clamp(1e-12, 1 - 1e-12)
        return float(-(labels * q.log() + (1 - labels) * (1 - q).log()).mean())

    assert log_loss(temperature) < log_loss(1.0) and log_loss(temperature) <= log_loss(2.5) + 1e-4
    assert (
        calibration_summary(apply_temperature(logits, temperature), labels)["ece"]
        < calibration_summary(torch.sigmoid(logits), labels)["ece"]
    )


def test_final_stats_choose_thresholds_on_validation_and_only_apply_them_to_test():
    val, test = _scores(200, seed=1), _scores(200, seed=2)
    stats = build_report({"val": val, "test": test}, 0.5, resamples=200).to_dict()
    chosen = choose_thresholds(*val)
    for name, point in stats["operating_points"].items():
        assert point["threshold"] == chosen[name]
        assert point["test"] == metrics_at(*test, chosen[name])
        assert set(point["intervals"]) == {"val", "test"}
    assert stats["samples"]["test"] == {"total": 200, "positive": int(test[1].sum())}
    assert stats["youden"]["threshold"] == chosen["youden"] and stats["degenerate"] is False
    assert math.isclose(sum(stats["calibration"]["val"]["bins"]["count"]), 200)
    # A model that calls everything pneumonia is flagged.
    flat = (torch.full((200,), 0.9), val[1])
    assert build_report({"val": flat}, 0.5, resamples=0).to_dict()["degenerate"] is True
