"""Stratified bootstrap confidence intervals for the final metrics, all resamples at once.

Each resample draws the positives and the negatives separately with replacement (so every resample has both
classes, and the class balance of the split), and is kept as a row of per-sample counts. Every metric is then
a matrix product of those counts: 1,000 resamples of 10,000 images take well under a second on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

INTERVAL_METRICS = ("auroc", "recall", "specificity", "precision", "f1")
RESAMPLES = 1000
LEVEL = 0.95
SEED = 20261201
CHUNK_CELLS = 4_000_000


def bootstrap_intervals(
    probs: torch.Tensor,
    targets: torch.Tensor,
    thresholds: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> list[dict[str, list[float]]]:
    """Percentile intervals of AUROC, sensitivity (recall), specificity, precision and F1 at each threshold.

    Parameters
    ----------
    probs, targets
        Probabilities of pneumonia and 0/1 labels of one split; both classes must be present.
    thresholds
        Decision thresholds (pneumonia when the probability is above one); every threshold is evaluated on
        the same resamples.
    resamples
        Bootstrap resamples (at least 1,000 for a 95% interval to be stable).
    level
        Coverage of the interval.
    seed
        Seeds the resampling, so the same predictions always give the same interval.

    Returns
    -------
    list of dict
        Per threshold, ``{metric: [low, high]}`` for each of :data:`INTERVAL_METRICS` (AUROC, threshold-free,
        is the same in each). Precision is undefined in a resample with no predicted positive; such resamples
        are left out of its interval.
    """
    probs, targets = probs.double().flatten(), targets.int().flatten()
    generator = torch.Generator().manual_seed(seed)
    chunk = max(1, CHUNK_CELLS // max(1, len(targets)))  # bounds memory: a few (chunk, n) float64 matrices
    auroc: list[torch.Tensor] = []
    per_threshold: list[list[dict[str, torch.Tensor]]] = [[] for _ in thresholds]
    for start in range(0, resamples, chunk):
        counts = resample_counts(targets, min(chunk, resamples - start), generator)
        auroc.append(weighted_auroc(probs, targets, counts))
        for parts, threshold in zip(per_threshold, thresholds):
            parts.append(_threshold_metrics(probs, targets, threshold, counts))
    shared = {"auroc": _interval(torch.cat(auroc), level)}
    out = []
    for parts in per_threshold:
        intervals = dict(shared)
        for name in INTERVAL_METRICS[1:]:
            interval = _interval(torch.cat([part[name] for part in parts]), level)
            if interval is not None:
                intervals[name] = interval
        out.append({k: v for k, v in intervals.items() if v is not None})
    return out


def _interval(series: torch.Tensor, level: float) -> list[float] | None:
    kept = series[~torch.isnan(series)]
    if not len(kept):
        return None
    tail = (1 - level) / 2
    low, high = torch.quantile(kept, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return [low, high]


def _threshold_metrics(
    probs: torch.Tensor, targets: torch.Tensor, threshold: float, counts: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Each threshold metric of each resample (a row of ``counts``)."""
    positive = (targets == 1).double()
    predicted = (probs > threshold).double()
    tp = counts @ (positive * predicted)
    fn = counts @ (positive * (1 - predicted))
    fp = counts @ ((1 - positive) * predicted)
    tn = counts @ ((1 - positive) * (1 - predicted))
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    return {
        "recall": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "precision": torch.where(tp + fp > 0, tp / (tp + fp), nan),
        "f1": 2 * tp / (2 * tp + fp + fn),  # defined whenever there are positives, which each resample has
    }


def resample_counts(targets: torch.Tensor, resamples: int, generator: torch.Generator) -> torch.Tensor:
    """``(resamples, n)`` counts: how often each sample is drawn, positives and negatives drawn separately."""
    counts = torch.zeros(resamples, len(targets), dtype=torch.float64)
    for label in (0, 1):
        members = torch.nonzero(targets == label).flatten()
        if not len(members):
            continue
        draws = members[torch.randint(len(members), (resamples, len(members)), generator=generator)]
        counts.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    return counts


def weighted_auroc(probs: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """AUROC of each row of sample ``counts`` (Mann-Whitney: ties count one half), shape ``(B,)``."""
    positive = (targets == 1).double()
    distinct, group = torch.unique(probs, sorted=True, return_inverse=True)  # ascending scores
    pos_w = torch.zeros(counts.shape[0], len(distinct), dtype=torch.float64)
    neg_w = torch.zeros_like(pos_w)
    index = group.expand(counts.shape[0], -1)
    pos_w.scatter_add_(1, index, counts * positive)
    neg_w.scatter_add_(1, index, counts * (1 - positive))
    negatives_below = torch.cumsum(neg_w, dim=1) - neg_w
    wins = (pos_w * (negatives_below + 0.5 * neg_w)).sum(dim=1)
    return wins / (pos_w.sum(dim=1) * neg_w.sum(dim=1))
