"""The report's charts as PNG images, drawn with matplotlib's Agg renderer (no GUI backend, no pyplot).

Figures are drawn at twice the size they are shown at (``DPI`` against 96 CSS pixels per inch), so they stay
sharp on high-density screens and in print. Legends sit outside the axes or in a corner the curve cannot reach.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from core.reporting import SplitCalibration
from core.reporting.records import SPLIT_NAMES
from core.stats.names import LABELS
from desktop.report.content import ReportContent

CSS_DPI = 96
DPI = 2 * CSS_DPI
LOSS_SERIES = (("train_loss", "Training loss"), ("val_loss", "Validation loss"))
QUALITY_SERIES = (
    ("val_auroc", "Validation AUROC"),
    ("val_recall", "Validation sensitivity"),
    ("val_specificity", "Validation specificity"),
)
POINT_MARKERS = {"threshold": "o", "youden": "D", "sens95": "^", "spec95": "s"}


@dataclass(frozen=True)
class Chart:
    """One chart: ``name`` is its file name inside the report, ``width`` its shown width in CSS pixels."""

    name: str
    title: str
    caption: str
    png: bytes
    width: int


def render_charts(content: ReportContent) -> dict[str, Chart]:
    """Every chart the run's data allows, keyed by section: ``confusion``, ``roc``, ``reliability``, ``training``."""
    makers: dict[str, Callable[[ReportContent], Chart | None]] = {
        "confusion": confusion_chart,
        "roc": roc_chart,
        "reliability": reliability_chart,
        "training": training_chart,
    }
    charts = {key: make(content) for key, make in makers.items()}
    return {key: chart for key, chart in charts.items() if chart is not None}


def training_chart(content: ReportContent) -> Chart | None:
    """Loss, and validation AUROC / sensitivity / specificity, per epoch (or round), with the best one marked."""
    series = content.series
    panels = [
        (name, rows) for name, rows in (("Loss", LOSS_SERIES), ("Validation", QUALITY_SERIES)) if _any(series, rows)
    ]
    if not panels:
        return None
    step = content.step_name
    figure = _figure(6.8, 3.3)
    for index, (title, rows) in enumerate(panels, 1):
        ax = figure.add_subplot(1, len(panels), index)
        for key, label in rows:
            if key in series:
                steps, values = series[key]
                ax.plot(steps, values, marker="o", markersize=3, linewidth=1.5, label=label)
        if content.run.best_epoch is not None:
            ax.axvline(content.run.best_epoch, color="0.35", linestyle="--", linewidth=1, label=f"Best {step}")
        if title == "Validation":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.set_xlabel(step.capitalize())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        # Below the axes, so no curve is ever hidden behind it.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False, fontsize="small")
    caption = (
        f"Per {step}. The dashed line marks the {step} whose model was kept (best validation AUROC). "
        "Validation loss rising while training loss falls means the model is overfitting."
    )
    return _chart(figure, "training.png", f"Training curves per {step}", caption)


def confusion_chart(content: ReportContent) -> Chart | None:
    """Confusion matrices of validation and test at the run's threshold."""
    splits = [s for s in content.splits if content.report.metrics(s).confusion is not None]
    if not splits:
        return None
    figure = _figure(3.3 * len(splits), 3.0)
    for index, split in enumerate(splits, 1):
        m = content.report.metrics(split).confusion
        assert m is not None
        # Rows: the truth; columns: the model's decision. Colour by share of the true class.
        counts = np.array([[m["tp"], m["fn"]], [m["fp"], m["tn"]]], dtype=float)
        totals = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        ax = figure.add_subplot(1, len(splits), index)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (row, col), count in np.ndenumerate(counts):
            colour = "white" if shares[row, col] > 0.6 else "black"
            ax.text(col, row, f"{int(count)}\n{shares[row, col]:.0%}", ha="center", va="center", color=colour)
        ax.set_xticks([0, 1], ["Pneumonia", "Normal"])
        ax.set_yticks([0, 1], ["Pneumonia", "Normal"])
        ax.set_xlabel("Model's decision")
        ax.set_ylabel("Truth")
        ax.set_title(SPLIT_NAMES[split])
    caption = (
        f"At the run's threshold {content.threshold:.3f}. Percentages are of each true class: the top-left cell "
        "is the sensitivity, the bottom-right one the specificity; missed pneumonias are top-right."
    )
    return _chart(figure, "confusion.png", "Confusion matrices", caption)


def roc_chart(content: ReportContent) -> Chart | None:
    """The validation ROC curve with the run's threshold and each operating point marked."""
    roc = content.roc
    if not roc or not roc.get("fpr"):
        return None
    figure = _figure(4.6, 4.2)
    ax = figure.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="Chance")
    auroc = content.report.metrics("val").get("auroc")
    label = f"Validation ROC (AUROC {auroc:.3f})" if auroc is not None else "Validation ROC"
    ax.plot(roc["fpr"], roc["tpr"], linewidth=1.8, label=label)
    points = [("threshold", f"Run threshold {content.threshold:.3f}", content.report.metrics("val"))]
    for point in content.report.points():
        if point.metrics("val"):
            points.append((point.name, f"{LABELS[point.name]} ({point.threshold:.3f})", point.metrics("val")))
    for name, text, metrics in points:
        recall, specificity = metrics.get("recall"), metrics.get("specificity")
        if recall is not None and specificity is not None:
            x, y = 1 - specificity, recall
            ax.plot([x], [y], marker=POINT_MARKERS[name], markersize=7, linestyle="none", label=text)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("Sensitivity (true positive rate)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    # A useful ROC curve hugs the top-left corner, so the bottom-right one stays free.
    ax.legend(loc="lower right", framealpha=0.9, fontsize="small")
    caption = (
        "Each point is a threshold applied to the validation images; the marked ones are the run's threshold and "
        "the operating points chosen on validation (their test results are in the table above)."
    )
    return _chart(figure, "roc.png", "ROC curve (validation)", caption)


def reliability_chart(content: ReportContent) -> Chart | None:
    """Reliability diagrams (10 bins) of validation and test: predicted probability against observed rate."""
    calibration = content.report.calibration
    splits = [s for s, c in calibration.splits.items() if c.bins] if calibration else []
    if not calibration or not splits:
        return None
    figure = _figure(3.4 * len(splits), 4.2)
    grid = figure.add_gridspec(2, len(splits), height_ratios=(3, 1))
    for column, split in enumerate(splits):
        summary = calibration.splits[split]
        top = figure.add_subplot(grid[0, column])
        bottom = figure.add_subplot(grid[1, column], sharex=top)
        _reliability(top, bottom, summary)
        ece = summary.ece
        top.set_title(SPLIT_NAMES[split] + (f" (ECE {ece:.3f})" if ece is not None else ""))
    caption = (
        "Images grouped by predicted probability (10 bins). On the diagonal, a predicted 80% means pneumonia in "
        "80% of such images; below it the model over-estimates the risk. Bars: images per bin."
    )
    return _chart(figure, "reliability.png", "Reliability diagrams", caption)


def _reliability(top: Axes, bottom: Axes, summary: SplitCalibration) -> None:
    bins = summary.bins
    assert bins is not None
    filled = [i for i, c in enumerate(bins["count"]) if c and bins["mean_probability"][i] is not None]
    top.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="Perfect calibration")
    top.plot(
        [bins["mean_probability"][i] for i in filled],
        [bins["observed"][i] for i in filled],
        marker="o",
        linewidth=1.5,
        label="Model",
    )
    top.set_xlim(0, 1)
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("Observed pneumonia rate")
    top.grid(alpha=0.3)
    top.legend(loc="best", framealpha=0.9, fontsize="small")
    top.tick_params(labelbottom=False)
    centres = [(lo + hi) / 2 for lo, hi in zip(bins["low"], bins["high"])]
    widths = [(hi - lo) * 0.9 for lo, hi in zip(bins["low"], bins["high"])]
    bottom.bar(centres, bins["count"], width=widths, color="0.55")
    bottom.set_xlabel("Mean predicted probability")
    bottom.set_ylabel("Images")
    bottom.yaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))


def _any(series: dict[str, Any], rows: tuple[tuple[str, str], ...]) -> bool:
    return any(key in series for key, _ in rows)


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas: renders without any display
    return figure


def _chart(figure: Figure, name: str, title: str, caption: str) -> Chart:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    width = round(figure.get_figwidth() * CSS_DPI)
    return Chart(name=name, title=title, caption=caption, png=buffer.getvalue(), width=width)
