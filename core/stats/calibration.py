"""How far predicted probabilities can be taken at face value: Brier score, ECE, reliability, temperature."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional import mean_squared_error
from torchmetrics.functional.classification import binary_calibration_error

BINS = 10


def calibration_summary(probs: torch.Tensor, targets: torch.Tensor, bins: int = BINS) -> dict[str, Any]:
    """Brier score, expected calibration error and a reliability diagram of one split.

    Returns
    -------
    dict
        ``{"brier": b, "ece": e, "bins": {"low": [...], "high": [...], "mean_probability": [...],
        "observed": [...], "count": [...]}}``. Bins are equal-width over [0, 1] (torchmetrics' binning); an
        empty bin has ``None`` for its mean probability and observed rate.
    """
    probs, targets = probs.float().flatten(), targets.int().flatten()
    edges = torch.linspace(0, 1, bins + 1)
    # Bins [edges[i], edges[i + 1]) as torchmetrics bins them; p == 1 joins the last bin.
    index = (torch.bucketize(probs, edges, right=True) - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins).double()
    prob_sum = torch.bincount(index, weights=probs.double(), minlength=bins)
    positive_sum = torch.bincount(index, weights=targets.double(), minlength=bins)
    filled = count > 0
    return {
        "brier": float(mean_squared_error(probs, targets.float())),
        "ece": float(binary_calibration_error(probs, targets, n_bins=bins, norm="l1")),
        "bins": {
            "low": edges[:-1].tolist(),
            "high": edges[1:].tolist(),
            "mean_probability": [float(s / c) if f else None for s, c, f in zip(prob_sum, count, filled)],
            "observed": [float(s / c) if f else None for s, c, f in zip(positive_sum, count, filled)],
            "count": [int(c) for c in count],
        },
    }


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature T minimising the log loss of ``sigmoid(logits / T)`` (fitted on validation).

    T > 1 softens over-confident probabilities; the ranking (AUROC) never changes. Fitted as log T with
    L-BFGS, so T stays positive; bounded to [0.05, 20] against a degenerate split.
    """
    logits, targets = logits.double().flatten().detach(), targets.double().flatten()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def apply_temperature(logits: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """Probabilities from logits, scaled by ``temperature`` when one was fitted."""
    return torch.sigmoid(logits / temperature if temperature else logits)
