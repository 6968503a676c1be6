"""Final statistics of a run: the best checkpoint's metrics on validation and test, and the Youden threshold."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_roc

from core.model.module import flatten_metrics, make_metrics


@torch.inference_mode()
def predict(
    model: torch.nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(probabilities, targets)`` of ``model`` over ``loader`` in eval mode."""
    was_training = model.training
    model.eval()
    probs, targets = [], []
    for images, labels, *_ in loader:
        if not labels.numel():
            continue
        probs.append(torch.sigmoid(model(images.to(device))).float().cpu())
        targets.append(labels.int())
    model.train(was_training)
    if not probs:
        return torch.empty(0), torch.empty(0, dtype=torch.int)
    return torch.cat(probs), torch.cat(targets)


def metrics_at(probs: torch.Tensor, targets: torch.Tensor, threshold: float) -> dict[str, float]:
    """Every reported metric (without split prefix) of predictions at ``threshold``."""
    collection = make_metrics(threshold)
    collection.update(probs, targets.int())
    flat = flatten_metrics(collection.compute(), "x")
    return {name.removeprefix("x_"): value for name, value in flat.items()}


def youden_threshold(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """The threshold maximising sensitivity + specificity - 1 on the ROC curve."""
    fpr, tpr, thresholds = binary_roc(probs, targets.int())
    best = int(torch.argmax(tpr - fpr))
    return float(thresholds[best].clamp(0.0, 1.0))


def final_stats(predictions: dict[str, tuple[torch.Tensor, torch.Tensor]], threshold: float) -> dict[str, Any]:
    """Build the ``final_stats`` of a ``training_end`` event.

    Parameters
    ----------
    predictions
        ``{"val": (probs, targets), "test": (...)}``; splits with no samples are left out.
    threshold
        The configured decision threshold.

    Returns
    -------
    dict
        ``{"val": {metric: value}, "test": {...}, "youden": {"threshold": t, "val": {...}},
        "roc": {"fpr": [...], "tpr": [...]}}`` (the ROC of the validation predictions).
        ``recall`` is the sensitivity.
    """
    stats: dict[str, Any] = {}
    for split, (probs, targets) in predictions.items():
        if len(targets) and len(set(targets.tolist())) > 1:
            stats[split] = metrics_at(probs, targets, threshold)
    if "val" in stats:
        probs, targets = predictions["val"]
        t = youden_threshold(probs, targets)
        stats["youden"] = {"threshold": t, "val": metrics_at(probs, targets, t)}
        stats["roc"] = roc_points(probs, targets)
    return stats


def roc_points(probs: torch.Tensor, targets: torch.Tensor, max_points: int = 200) -> dict[str, list[float]]:
    """The exact ROC curve, thinned to at most ``max_points`` points (first and last kept)."""
    fpr, tpr, _ = binary_roc(probs, targets.int())
    keep = torch.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).round().long().unique()
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}
