"""Render a run's final statistics as text (shared by `train` and `runs show`)."""

from __future__ import annotations

from typing import Any

from core.persistence.federation import FederationHistory
from core.reporting import RunReport
from core.stats.names import LABELS
from desktop.cli.common import format_table

STAT_ROWS = (
    ("auroc", "AUROC"),
    ("recall", "Sensitivity (recall)"),
    ("specificity", "Specificity"),
    ("precision", "Precision"),
    ("f1", "F1"),
    ("accuracy", "Accuracy"),
)
SPLIT_NAMES = {"val": "Validation", "test": "Test"}
DEGENERATE = (
    "WARNING: at its threshold this model gives every validation image the same decision, and no epoch (or "
    "round) did better: it is not usable at that threshold. Use an operating point below, chosen from its ranking."
)


def format_final_stats(report: RunReport) -> str:
    """The best checkpoint's metrics per split with 95% intervals, the operating points and calibration."""
    splits = report.evaluated
    if not splits:
        return "No final statistics (the run ended before a validation epoch completed)."
    rows: list[dict[str, Any]] = [
        dict(zip(["metric", *splits], cells)) for cells in report.metric_rows(STAT_ROWS, splits)
    ]
    rows.append({"metric": "TP / FP / TN / FN"} | {split: report.metrics(split).counts_text() for split in splits})
    title = report.headline() + ("; 95% bootstrap intervals in brackets" if report.has_intervals else "")
    parts = [title, format_table(rows, ["metric", *splits], ["Metric", *(SPLIT_NAMES[s] for s in splits)])]
    if report.degenerate:
        parts.insert(0, DEGENERATE)
    points = _operating_points(report)
    if points:
        parts += ["", "Operating points (threshold chosen on validation, applied to test)", points]
    calibration = _calibration(report)
    if calibration:
        parts += ["", calibration]
    privacy = report.privacy
    if privacy is not None:
        parts += [
            "",
            f"Differential privacy: epsilon {privacy.epsilon:.2f} at delta {privacy.delta} after "
            f"{privacy.releases} rounds (noise multiplier {privacy.noise_multiplier}, {privacy.clipping} "
            f"clipping at {privacy.clipping_norm}; {privacy.accounting})",
        ]
    return "\n".join(parts)


def format_federation(history: FederationHistory) -> str:
    """A server run's rounds (its evaluation, privacy spent) and every site's reply per round."""
    rounds = []
    for row in history.rounds:
        metrics = row.get("server_metrics") or {}
        rounds.append(
            {
                "round": row["round_number"],
                "auroc": _fixed(metrics.get("val_auroc")),
                "sensitivity": _fixed(metrics.get("val_recall")),
                "specificity": _fixed(metrics.get("val_specificity")),
                "epsilon": _fixed(metrics.get("dp_epsilon"), 2),
            }
        )
    columns = ["round", "auroc", "sensitivity", "specificity"] + (
        ["epsilon"] if any(r["epsilon"] for r in rounds) else []
    )
    parts = ["Server evaluation per round (held-out set)", format_table(rounds, columns) if rounds else "No rounds."]
    sites = []
    for reply in history.replies:
        m = reply.metrics
        sites.append(
            {
                "round": reply.round_number,
                "site": reply.site_name,
                "status": f"FAILED: {reply.error}" if reply.failed else "ok",
                "images": "" if reply.failed else reply.num_examples,
                "train_loss": _fixed(m.get("train_loss")),
                "global_auroc": _fixed(m.get("global_val_auroc")),
                "train_s": _fixed(m.get("train_seconds"), 1),
                "wait_s": _fixed(m.get("wait_seconds"), 1),
                "worker_start_s": _fixed(m.get("worker_start_seconds"), 1),
                "worker_mb": _fixed(m.get("worker_rss_mb"), 0),
                "mb_to": _fixed(m["bytes_to_site"] / 1e6, 2) if "bytes_to_site" in m else "",
                "mb_from": _fixed(m["bytes_from_site"] / 1e6, 2) if "bytes_from_site" in m else "",
            }
        )
    if sites:
        headers = ["Round", "Site", "Status", "Images", "Train loss", "Global AUROC here", "Train s", "Wait s"]
        headers += ["Worker start s", "Worker MB", "MB to site", "MB from site"]
        parts += ["", "Every site per round", format_table(sites, list(sites[0]), headers)]
    return "\n".join(parts)


def _fixed(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _operating_points(report: RunReport) -> str:
    points = report.points()
    if not points:
        return ""
    splits = [s for s in ("val", "test") if any(p.metrics(s) for p in points)]
    keys = ("recall", "specificity")
    rows = [
        dict(
            zip(
                ["point", "threshold", *(f"{s}_{k}" for s in splits for k in keys)],
                [LABELS[point.name], f"{point.threshold:.3f}", *report.point_cells(point, splits, keys)],
            )
        )
        for point in points
    ]
    columns = ["point", "threshold"] + [f"{s}_{k}" for s in splits for k in keys]
    short = {"val": "Val", "test": "Test"}
    headers = ["Operating point", "Threshold"] + [
        f"{short[s]} {'sensitivity' if k == 'recall' else 'specificity'}" for s in splits for k in keys
    ]
    return format_table(rows, columns, headers)


def _calibration(report: RunReport) -> str:
    calibration = report.calibration
    if calibration is None or not calibration.splits:
        return ""
    parts = [
        f"{SPLIT_NAMES[split].lower()} Brier {c.brier:.4f}, ECE {c.ece:.4f}" for split, c in calibration.splits.items()
    ]
    line = "Calibration: " + "; ".join(parts)
    if calibration.temperature:
        before = calibration.before_scaling.get("val")
        line += f". Temperature {calibration.temperature:.3f} fitted on validation"
        line += f" (validation ECE before scaling {before.ece:.4f})" if before else ""
    return line + "."
