"""Final statistics of a model: metrics with bootstrap intervals, operating points and calibration, per split.

Everything a person reads about a finished run is computed here, once, from the best checkpoint's predictions
on validation and test: thresholds are chosen on validation and only applied to test.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_roc

from core.model.module import flatten_metrics, make_metrics
from core.stats.bootstrap import RESAMPLES, bootstrap_intervals
from core.stats.calibration import calibration_summary
from core.stats.operating_points import OPERATING_POINTS, choose_thresholds
from core.training.selection import one_class

STATS_VERSION = 2
Predictions = dict[str, tuple[torch.Tensor, torch.Tensor]]


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logits, targets)`` of ``model`` over ``loader`` in eval mode."""
    was_training = model.training
    model.eval()
    logits, targets = [], []
    for images, labels, *_ in loader:
        if not labels.numel():
            continue
        logits.append(model(images.to(device)).float().cpu())
        targets.append(labels.int())
    model.train(was_training)
    if not logits:
        return torch.empty(0), torch.empty(0, dtype=torch.int)
    return torch.cat(logits), torch.cat(targets)


def predict(
    model: torch.nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(probabilities, targets)`` of ``model`` over ``loader`` in eval mode."""
    logits, targets = predict_logits(model, loader, device)
    return torch.sigmoid(logits), targets


def metrics_at(probs: torch.Tensor, targets: torch.Tensor, threshold: float) -> dict[str, float]:
    """Every reported metric (without split prefix) of predictions at ``threshold``."""
    collection = make_metrics(threshold)
    collection.update(probs, targets.int())
    flat = flatten_metrics(collection.compute(), "x")
    return {name.removeprefix("x_"): value for name, value in flat.items()}


def final_stats(
    predictions: Predictions,
    threshold: float,
    *,
    temperature: float | None = None,
    uncalibrated: Predictions | None = None,
    resamples: int = RESAMPLES,
) -> dict[str, Any]:
    """Build the ``final_stats`` of a ``training_end`` event.

    Parameters
    ----------
    predictions
        ``{"val": (probs, targets), "test": (...)}``; splits without both classes are left out.
    threshold
        The configured decision threshold (pneumonia when the probability is above it).
    temperature
        The temperature ``probs`` were scaled with, if any (recorded with the calibration).
    uncalibrated
        The probabilities before temperature scaling, to report the calibration it improved.
    resamples
        Bootstrap resamples per interval (0 leaves intervals out, for per-round federated evaluation).

    Returns
    -------
    dict
        ``version``, ``threshold``; per split ``val``/``test`` metrics; ``samples`` (``total``, ``positive``);
        ``intervals[split][metric] = [low, high]`` (95%, stratified bootstrap); ``operating_points[name]`` with
        ``threshold`` (chosen on validation), ``val``, ``test`` and ``intervals``; ``youden`` (its threshold and
        validation metrics, for older readers); ``calibration`` (``temperature``, per split Brier, ECE and
        reliability bins); ``roc`` of validation; ``degenerate`` when validation gets one decision for every
        image at ``threshold``.
    """
    usable = {s: p for s, p in predictions.items() if len(p[1]) and len(set(p[1].tolist())) > 1}
    stats: dict[str, Any] = {"version": STATS_VERSION, "threshold": threshold}
    if "val" not in usable:
        for split, (probs, targets) in usable.items():
            stats[split] = metrics_at(probs, targets, threshold)
        return stats if len(stats) > 2 else {}
    chosen = choose_thresholds(*usable["val"])
    thresholds = [threshold, *(chosen[name] for name in OPERATING_POINTS)]
    points: dict[str, dict[str, Any]] = {
        name: {"threshold": chosen[name], "intervals": {}} for name in OPERATING_POINTS
    }
    stats |= {"samples": {}, "intervals": {}, "operating_points": points, "calibration": {"temperature": temperature}}
    for split, (probs, targets) in usable.items():
        stats[split] = metrics_at(probs, targets, threshold)
        stats["samples"][split] = {"total": len(targets), "positive": int(targets.sum())}
        for name in OPERATING_POINTS:
            points[name][split] = metrics_at(probs, targets, chosen[name])
        if resamples:
            base, *at_points = bootstrap_intervals(probs, targets, thresholds, resamples=resamples)
            stats["intervals"][split] = base
            for name, intervals in zip(OPERATING_POINTS, at_points):
                points[name]["intervals"][split] = intervals
        stats["calibration"][split] = calibration_summary(probs, targets)
        if uncalibrated and split in uncalibrated:
            before = calibration_summary(*uncalibrated[split])
            stats["calibration"].setdefault("before_scaling", {})[split] = {k: before[k] for k in ("brier", "ece")}
    stats["youden"] = {"threshold": chosen["youden"], "val": points["youden"]["val"]}
    stats["roc"] = roc_points(*usable["val"])
    stats["degenerate"] = one_class(stats["val"], prefix="")
    return stats


def roc_points(probs: torch.Tensor, targets: torch.Tensor, max_points: int = 200) -> dict[str, list[float]]:
    """The exact ROC curve, thinned to at most ``max_points`` points (first and last kept)."""
    fpr, tpr, _ = binary_roc(probs, targets.int())
    keep = torch.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).round().long().unique()
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}
