"""Which epoch (or federated round) is the best: the monitored metric, never a one-class model, Youden's J on ties.

A model that calls every validation image pneumonia has perfect recall, and one that calls every image normal
has perfect specificity; neither is usable. Such an epoch only wins when no epoch did better than that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Key = tuple[bool, float, float]


def one_class(metrics: Mapping[str, float], prefix: str = "val_") -> bool:
    """True when the confusion matrix in ``metrics`` has every image on one side of the threshold."""
    cm = {k: metrics.get(f"{prefix}cm_{k}") for k in ("tp", "fp", "tn", "fn")}
    if any(v is None for v in cm.values()):
        return False
    return cm["tp"] + cm["fp"] == 0 or cm["tn"] + cm["fn"] == 0  # type: ignore[operator]


def selection_key(metrics: Mapping[str, float], monitor: str, mode: str, prefix: str = "val_") -> Key | None:
    """The sort key of one epoch's metrics (greater is better), or ``None`` when the monitor is missing or NaN.

    Parameters
    ----------
    metrics
        ``{prefix}{metric}`` values (epoch-end validation, or a federated round's server evaluation).
    monitor, mode
        The configured metric and whether greater (``max``) or smaller (``min``) is better.
    """
    value = metrics.get(monitor)
    if value is None or math.isnan(value):
        return None
    recall, specificity = metrics.get(f"{prefix}recall"), metrics.get(f"{prefix}specificity")
    youden = recall + specificity - 1 if recall is not None and specificity is not None else -math.inf
    if math.isnan(youden):
        youden = -math.inf
    return (not one_class(metrics, prefix), value if mode == "max" else -value, youden)
