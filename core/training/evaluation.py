"""A model's predictions over a loader, the metrics at one threshold and the ROC curve.

The run's final statistics are built from these by :func:`core.reporting.evaluate.evaluate_report`.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_roc

from core.model.module import flatten_metrics, make_metrics

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


def roc_points(probs: torch.Tensor, targets: torch.Tensor, max_points: int = 200) -> dict[str, list[float]]:
    """The exact ROC curve, thinned to at most ``max_points`` points (first and last kept)."""
    fpr, tpr, _ = binary_roc(probs, targets.int())
    keep = torch.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).round().long().unique()
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}
