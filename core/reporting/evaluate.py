"""From a model's logits to its :class:`RunReport`: the one recipe every run uses.

Centralized runs, the federation server (its held-out set) and federated sites all evaluate the chosen
weights the same way: optionally fit a temperature on the validation logits, then compute metrics at the
configured threshold, the operating points chosen on validation (only applied to test), bootstrap
intervals, calibration and the validation ROC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch

from core.reporting.records import (
    Calibration,
    ModelRecord,
    OperatingPoint,
    Roc,
    SampleCounts,
    SplitCalibration,
    SplitMetrics,
)
from core.reporting.report import RunReport
from core.stats.bootstrap import RESAMPLES, bootstrap_intervals
from core.stats.calibration import apply_temperature, calibration_summary, fit_temperature
from core.stats.operating_points import OPERATING_POINTS, choose_thresholds
from core.training.evaluation import metrics_at, roc_points
from core.training.selection import one_class

Predictions = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


def _two_classes(targets: torch.Tensor) -> bool:
    return bool(len(targets)) and len(set(targets.tolist())) > 1


def evaluate_report(
    logits: Predictions,
    threshold: float,
    *,
    temperature_scaling: bool,
    resamples: int = RESAMPLES,
    model: ModelRecord | None = None,
    samples: Mapping[str, SampleCounts] | None = None,
) -> RunReport:
    """Evaluate ``{"val": (logits, targets), "test": (...)}`` into the run's report.

    Parameters
    ----------
    logits
        Raw logits and 0/1 targets per split (``val`` is needed for operating points and calibration).
    threshold
        The configured decision threshold (pneumonia when the probability is above it).
    temperature_scaling
        Fit a temperature on the validation logits; every reported probability (and so every threshold
        chosen on them) is then the scaled one, as ``predict`` will give.
    resamples
        Bootstrap resamples per interval (0 leaves intervals out, for per-round federated evaluation).
    model
        The evaluated weights' record (kept only when there are statistics).
    samples
        More image counts to report (the training split's), kept only when there are statistics.

    Returns
    -------
    RunReport
        Empty when no split has both classes.
    """
    temperature = None
    if temperature_scaling and "val" in logits and _two_classes(logits["val"][1]):
        temperature = fit_temperature(*logits["val"])
    probs = {split: (apply_temperature(z, temperature), y) for split, (z, y) in logits.items()}
    raw = {split: (torch.sigmoid(z), y) for split, (z, y) in logits.items()} if temperature else None
    report = build_report(probs, threshold, temperature=temperature, uncalibrated=raw, resamples=resamples)
    if not report:
        return report
    return replace(report, samples={**report.samples, **(samples or {})}, model=model)


def build_report(
    predictions: Predictions,
    threshold: float,
    *,
    temperature: float | None = None,
    uncalibrated: Predictions | None = None,
    resamples: int = RESAMPLES,
) -> RunReport:
    """The report of probabilities already computed (and scaled with ``temperature``, if any).

    Parameters
    ----------
    predictions
        ``{"val": (probs, targets), "test": (...)}``; splits without both classes are left out.
    threshold
        The configured decision threshold.
    temperature
        The temperature ``predictions`` were scaled with, if any (recorded with the calibration).
    uncalibrated
        The probabilities before temperature scaling, to report the calibration it improved.
    resamples
        Bootstrap resamples per interval (0 leaves intervals out).

    Returns
    -------
    RunReport
        Metrics per split; with a usable validation split also samples, intervals, operating points (chosen
        on validation), calibration, the validation ROC and whether validation gets a single decision.
    """
    usable = {s: p for s, p in predictions.items() if _two_classes(p[1])}
    if "val" not in usable:
        splits = {s: SplitMetrics(metrics_at(probs, y, threshold)) for s, (probs, y) in usable.items()}
        return RunReport(threshold=threshold, splits=splits) if splits else RunReport()
    chosen = choose_thresholds(*usable["val"])
    thresholds = [threshold, *(chosen[name] for name in OPERATING_POINTS)]
    splits, samples, calibrated, before = {}, {}, {}, {}
    at_points: dict[str, dict[str, SplitMetrics]] = {name: {} for name in OPERATING_POINTS}
    for split, (probs, targets) in usable.items():
        values = {name: metrics_at(probs, targets, chosen[name]) for name in OPERATING_POINTS}
        base_bounds: dict = {}
        point_bounds: dict[str, dict] = {name: {} for name in OPERATING_POINTS}
        if resamples:
            base_bounds, *bounds = bootstrap_intervals(probs, targets, thresholds, resamples=resamples)
            point_bounds = dict(zip(OPERATING_POINTS, bounds))
        splits[split] = SplitMetrics.from_dict(metrics_at(probs, targets, threshold), base_bounds)
        for name in OPERATING_POINTS:
            at_points[name][split] = SplitMetrics.from_dict(values[name], point_bounds[name])
        samples[split] = SampleCounts(total=len(targets), positive=int(targets.sum()))
        calibrated[split] = SplitCalibration.from_dict(calibration_summary(probs, targets))
        if uncalibrated and split in uncalibrated:
            summary = calibration_summary(*uncalibrated[split])
            before[split] = SplitCalibration(brier=summary["brier"], ece=summary["ece"])
    return RunReport(
        threshold=threshold,
        splits=splits,
        samples=samples,
        operating_points={n: OperatingPoint(n, chosen[n], at_points[n]) for n in OPERATING_POINTS},
        calibration=Calibration(temperature=temperature, splits=calibrated, before_scaling=before),
        roc=Roc.from_dict(roc_points(*usable["val"])),
        degenerate=one_class(splits["val"].values, prefix=""),
    )
