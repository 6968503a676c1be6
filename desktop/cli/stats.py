"""Render a run's final statistics as text (shared by `train` and `runs show`)."""

from __future__ import annotations

from typing import Any

from desktop.cli.common import format_table

STAT_ROWS = (
    ("recall", "Sensitivity (recall)"),
    ("specificity", "Specificity"),
    ("precision", "Precision"),
    ("accuracy", "Accuracy"),
    ("f1", "F1"),
    ("auroc", "AUROC"),
    ("cm_tp", "True positives"),
    ("cm_fp", "False positives"),
    ("cm_tn", "True negatives"),
    ("cm_fn", "False negatives"),
)


def format_final_stats(stats: dict[str, Any]) -> str:
    """Table of the best checkpoint's metrics per split, plus the Youden-optimal threshold."""
    youden = stats.get("youden") or {}
    columns = [split for split in ("val", "test") if stats.get(split)]
    headers = {"val": "Validation", "test": "Test"}
    rows: list[dict[str, Any]] = []
    for key, label in STAT_ROWS:
        row: dict[str, Any] = {"metric": label}
        for split in columns:
            row[split] = stats[split].get(key)
        if youden.get("val"):
            row["youden"] = youden["val"].get(key)
        rows.append(row)
    cols = ["metric", *columns] + (["youden"] if youden.get("val") else [])
    names = ["Metric", *(headers[c] for c in columns)]
    if youden.get("val"):
        names.append(f"Val @ Youden t={youden['threshold']:.3f}")
    if not columns:
        return "No final statistics (the run ended before a validation epoch completed)."
    return format_table(rows, cols, names)
