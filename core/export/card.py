"""The model card: what an exported model is for, how it was trained, how good it is, and how to feed it.

It is written as JSON (read back by ``predict --model``) and as a Markdown page for people. It never holds a
path, a file name of an image, or anything about a patient: only counts, settings and statistics.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core import __version__
from core.data.fingerprint import describe
from core.data.images import NORMALISE_MEAN as MEAN
from core.data.images import NORMALISE_STD as STD
from core.persistence.runs import RunRecord
from core.reporting import RunReport
from core.stats.names import LABELS

CARD_FORMAT = "pneumofl-model-card"
CARD_VERSION = 1
INTENDED_USE = (
    "Research and quality-assurance aid that estimates the probability of pneumonia on a frontal chest "
    "radiograph. It is not a medical device and does not replace a radiologist's reading."
)
LIMITATIONS = (
    "Trained and evaluated only on the data summarised below; performance on other scanners, sites, "
    "populations or projections (lateral, portable AP, paediatric) is unknown until measured there.",
    "Confidence intervals describe sampling uncertainty of the evaluation split only, not shifts in the data.",
    "The decision threshold trades sensitivity for specificity; choose the operating point for the clinical use.",
    "Grad-CAM heatmaps show where evidence for pneumonia was found; they are not a segmentation of disease.",
)
# Keys of the final statistics copied into the card (the checkpoint's location stays behind).
STAT_KEYS = (
    "version",
    "threshold",
    "val",
    "test",
    "samples",
    "intervals",
    "operating_points",
    "calibration",
    "degenerate",
)


def build_card(
    run: RunRecord,
    report: RunReport,
    *,
    file_name: str,
    file_format: str,
    file_sha256: str,
    verification: dict[str, Any],
    sites: list[str],
) -> dict[str, Any]:
    """The model card of run ``run``'s evaluated weights (``report.model``), exported as ``file_name``."""
    config = run.config or {}
    training = config.get("training", config)  # a federated server run nests the site configuration
    model = report.model
    assert model is not None, "only an evaluated model is exported"
    stats = report.to_dict()
    return {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "pneumofl_version": __version__,
        "intended_use": INTENDED_USE,
        "limitations": list(LIMITATIONS),
        "model": {
            "backbone": model.backbone,
            "input_size": model.image_size,
            "weights_sha256": model.weights_sha256,
            "temperature": report.calibration.temperature if report.calibration else None,
            "output": "probability of pneumonia, one per image",
            "decision_rule": "PNEUMONIA when the probability is above the threshold, else NORMAL",
        },
        "preprocessing": {
            "input": f"float32 tensor (N, 3, {model.image_size}, {model.image_size}), named 'image'",
            "steps": [
                "decode to 8-bit grey: DICOM modality LUT, VOI LUT, MONOCHROME1 inverted, then min-max to 0-255",
                f"resize to {model.image_size} x {model.image_size} (bilinear, antialiased)",
                "scale to [0, 1], repeat the grey channel 3 times",
                f"normalise: (x - {MEAN}) / {STD}",
            ],
        },
        "file": {"name": file_name, "format": file_format, "sha256": file_sha256},
        "training": {
            "run_id": run.id,
            "experiment": run.experiment_name,
            "mode": run.training_mode,
            "finished": run.end_time.isoformat(timespec="seconds") if run.end_time else None,
            "best_epoch_or_round": run.best_epoch,
            "epochs": training.get("epochs"),
            "rounds": config.get("rounds"),
            "loss": training.get("loss"),
            "monitor": training.get("monitor"),
            "sites": sites,
            "samples": stats.get("samples") or {},
            # Counts only (modality, view, body part, manufacturer, age band), sizes and an intensity range:
            # what reading checks an image against (core.data.fingerprint); None for runs recorded before it.
            "data_fingerprint": (run.final_stats or {}).get("data_fingerprint"),
        },
        "statistics": {k: stats[k] for k in STAT_KEYS if k in stats},
        "verification": verification,
    }


def card_markdown(card: dict[str, Any]) -> str:
    """The card as a Markdown page for people."""
    model, training, report = card["model"], card["training"], RunReport.from_dict(card["statistics"])
    lines = [
        f"# Model card: {training['experiment']} (run {training['run_id']})",
        "",
        f"Exported by PneumoFL {card['pneumofl_version']} on {card['created']} as `{card['file']['name']}` "
        f"({card['file']['format']}).",
        "",
        "## Intended use",
        "",
        card["intended_use"],
        "",
        "## Limits",
        "",
        *(f"- {item}" for item in card["limitations"]),
        "",
        "## Model",
        "",
        f"- Backbone: {model['backbone']}, input {model['input_size']} x {model['input_size']} pixels",
        f"- Output: {model['output']}; {model['decision_rule']}",
        f"- Temperature scaling: {model['temperature']:.3f}"
        if model.get("temperature")
        else "- Temperature scaling: off",
        f"- SHA-256 of the weights: `{model['weights_sha256']}`",
        f"- SHA-256 of the file: `{card['file']['sha256']}`",
        "",
        "## Preprocessing",
        "",
        f"Input: {card['preprocessing']['input']}.",
        "",
        *(f"{i}. {step}" for i, step in enumerate(card["preprocessing"]["steps"], 1)),
        "",
        "## Training data",
        "",
        f"- Mode: {training['mode']}" + (f", sites: {', '.join(training['sites'])}" if training["sites"] else ""),
        *(_sample_line(split, counts) for split, counts in (training.get("samples") or {}).items()),
        f"- Best epoch/round: {training['best_epoch_or_round']}, chosen by {training.get('monitor') or 'val_auroc'}",
        "",
        *_fingerprint_lines(training.get("data_fingerprint")),
        "## Performance",
        "",
        *_metric_table(report),
        "",
        "## Operating points (thresholds chosen on validation, applied to test)",
        "",
        *_points_table(report),
        "",
        "## Calibration",
        "",
        *_calibration_lines(report),
        "",
        "## Verification",
        "",
        f"{card['verification'].get('summary', '')}",
        "",
    ]
    return "\n".join(lines)


def _fingerprint_lines(fingerprint: dict[str, Any] | None) -> list[str]:
    """The training data's fingerprint as a preformatted block, or why there is none.

    It is what an image read with this model is checked against.
    """
    if not fingerprint:
        return ["No fingerprint of the training data was recorded: images read with this model get no warnings.", ""]
    return ["```", *describe(fingerprint), "```", ""]


def _sample_line(split: str, counts: dict[str, int]) -> str:
    total, positive = counts.get("total", 0), counts.get("positive", 0)
    share = f"{positive / total:.0%}" if total else "-"
    return f"- {split}: {total} images, {positive} pneumonia ({share}), {total - positive} normal"


METRIC_ROWS = (
    ("auroc", "AUROC"),
    ("recall", "Sensitivity"),
    ("specificity", "Specificity"),
    ("precision", "Precision"),
    ("f1", "F1"),
)


def _metric_table(report: RunReport) -> list[str]:
    splits = report.evaluated
    if not splits:
        return ["No evaluation."]
    rows = [
        f"| Metric (threshold {report.threshold_or(0.5):.3f}) | " + " | ".join(_split_name(s) for s in splits) + " |"
    ]
    rows.append("|---|" + "---|" * len(splits))
    rows += ["| " + " | ".join(cells) + " |" for cells in report.metric_rows(METRIC_ROWS)]
    return rows


def _points_table(report: RunReport) -> list[str]:
    points = report.points()
    if not points:
        return ["None (validation had a single class)."]
    rows = ["| Operating point | Threshold | Val sensitivity | Val specificity | Test sensitivity | Test specificity |"]
    rows.append("|---|---|---|---|---|---|")
    for point in points:
        cells = report.point_cells(point, ("val", "test"), ("recall", "specificity"))
        rows.append(f"| {LABELS[point.name]} | {point.threshold:.3f} | " + " | ".join(cells) + " |")
    return rows


def _calibration_lines(report: RunReport) -> list[str]:
    calibration = report.calibration
    if calibration is None:
        return ["Not measured."]
    lines = [
        f"- {_split_name(split)}: Brier score {c.brier:.4f}, expected calibration error {c.ece:.4f}"
        for split, c in calibration.splits.items()
    ]
    if calibration.temperature:
        lines.append(f"- Temperature {calibration.temperature:.3f}, fitted on validation")
    return lines or ["Not measured."]


def _split_name(split: str) -> str:
    return {"val": "Validation", "test": "Test"}.get(split, split)
