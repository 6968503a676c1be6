"""Decision thresholds chosen on validation predictions: Youden's J, sensitivity >= 0.95, specificity >= 0.95.

A prediction is pneumonia when its probability is *above* the threshold (torchmetrics' rule). ROC points are
reached with ``>=`` at a score, so each chosen threshold sits halfway between that score and the next lower
one: applying it reproduces the ROC point exactly, and nearby validation scores are not split arbitrarily.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import binary_roc

from core.stats.names import LABELS, OPERATING_POINTS

__all__ = ["LABELS", "OPERATING_POINTS", "choose_thresholds"]
TARGET = 0.95


def choose_thresholds(probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """The threshold of each operating point on these (validation) predictions.

    Parameters
    ----------
    probs, targets
        Probabilities of pneumonia and 0/1 labels; both classes must be present.

    Returns
    -------
    dict
        ``{"youden": t, "sens95": t, "spec95": t}``: the threshold maximising sensitivity + specificity - 1;
        the highest threshold with sensitivity >= 0.95 (the best specificity there); the lowest threshold
        with specificity >= 0.95 (the best sensitivity there).
    """
    fpr, tpr, scores = binary_roc(probs.float(), targets.int())
    # thresholds[0] is a "nothing positive" point above every score; the rest are the distinct scores, descending.
    cut = _cut_points(scores)
    youden = int(torch.argmax(tpr - fpr))
    sens = int(torch.nonzero(tpr >= TARGET)[0])  # tpr rises along the curve: the first index has the lowest fpr
    spec = int(torch.nonzero(1 - fpr >= TARGET)[-1])  # the last index still within fpr <= 0.05 has the best tpr
    return {"youden": cut[youden], "sens95": cut[sens], "spec95": cut[spec]}


def _cut_points(scores: torch.Tensor) -> list[float]:
    """For ROC point k (positive when p >= scores[k]), a threshold t with the same positives under p > t.

    Computed in float32, the precision of the probabilities it is compared with: for two adjacent float32
    scores the midpoint would round onto the upper one, so the lower one is used instead.
    """
    upper = scores.float().clamp(0.0, 1.0)
    lower = torch.cat([upper[1:], upper.new_zeros(1)])
    cuts = (upper + lower) / 2
    cuts = torch.where(cuts >= upper, lower, cuts)
    return [float(c) for c in cuts]
