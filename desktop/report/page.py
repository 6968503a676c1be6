"""The report as one HTML page, written for both a browser and Qt's rich-text engine (which renders the PDF).

Qt understands only a subset of HTML 4 and CSS 2, so layout uses plain tables with ``border``/``cellpadding``
attributes and the warning is a one-cell table; a browser gets the same page with a little more polish.
Every text that comes from the database is escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from html import escape
from typing import Any

from core import __version__
from core.export.card import METRIC_ROWS
from core.reporting.records import SPLIT_NAMES
from core.stats.names import LABELS
from desktop.cli.common import format_duration
from desktop.report.charts import Chart
from desktop.report.content import ReportContent, generated_at, local_time

STYLE = """
body { font-family: 'DejaVu Sans', 'Segoe UI', Arial, sans-serif; font-size: 10pt; color: #1d2329; max-width: 760px; }
h1 { font-size: 17pt; margin-bottom: 2px; }
h2 { font-size: 13pt; margin-top: 18px; margin-bottom: 6px; color: #1f4e79; page-break-after: avoid; }
h3 { font-size: 10.5pt; margin-top: 8px; margin-bottom: 4px; page-break-after: avoid; }
p { margin-top: 4px; margin-bottom: 4px; }
table.grid { border-collapse: collapse; margin-bottom: 6px; }
table.grid th, table.grid td { border: 1px solid #b8c2cc; padding: 3px 7px; white-space: nowrap; }
table.small { font-size: 9pt; }
table.grid th { background-color: #e8eef4; text-align: left; white-space: normal; }
td.num { text-align: right; }
.note { color: #555f69; font-size: 9pt; }
table.warning { border-collapse: collapse; margin-top: 10px; margin-bottom: 10px; }
table.warning td { background-color: #fde4e1; color: #8b1a10; border: 2px solid #c0392b; padding: 8px;
                   font-weight: bold; }
img { max-width: 100%; height: auto; page-break-inside: avoid; }
"""

ImageSource = Callable[[Chart], str]


def render_html(content: ReportContent, charts: dict[str, Chart], image_source: ImageSource) -> str:
    """The whole report page.

    Parameters
    ----------
    content
        The run and its statistics.
    charts
        The charts by section (see :func:`desktop.report.charts.render_charts`).
    image_source
        The ``src`` of a chart's ``<img>``: a ``data:`` URI for a self-contained page, or a resource name
        registered with the ``QTextDocument`` that prints the PDF.
    """
    run = content.run
    title = f"Run {run.id}: {run.experiment_name}"
    body = [f"<h1>{escape(title)}</h1>", f'<p class="note">PneumoFL run report, written {generated_at()}.</p>']
    body += _warnings(content)
    body += _section("Summary", _summary(content))
    if content.has_final_stats:
        body += _section(f"Performance at the run's threshold ({content.threshold:.3f})", _metrics(content))
        body += _figure(charts.get("confusion"), image_source)
        body += _section("Operating points", _points(content))
        body += _figure(charts.get("roc"), image_source)
        body += _section("Calibration", _calibration(content))
        body += _figure(charts.get("reliability"), image_source)
    else:
        body.append(
            "<p><b>There are no final statistics for this run</b>: it ended before its model was evaluated on "
            "the validation images, so only what was recorded during training is shown.</p>"
        )
    if "training" in charts:
        body += _figure(charts["training"], image_source)
    else:
        body += _section("Training curves", [f"<p>No {content.step_name} was completed.</p>"])
    head = f'<meta charset="utf-8"><title>{escape(title)}</title><style>{STYLE}</style>'
    return f"<!DOCTYPE html>\n<html><head>{head}</head><body>\n" + "\n".join(body) + "\n</body></html>\n"


def _warnings(content: ReportContent) -> list[str]:
    lines = []
    if content.report.degenerate:
        m = content.report.metrics("val")
        which = ""
        if (m.get("cm_tp") or 0) + (m.get("cm_fp") or 0) == 0:
            which = " (all NORMAL)"
        elif (m.get("cm_tn") or 0) + (m.get("cm_fn") or 0) == 0:
            which = " (all PNEUMONIA)"
        lines.append(
            f"Warning: at the threshold {content.threshold:.3f} every validation image got one decision{which}. "
            "The model is not usable as is: choose an operating point below, or train again with more data or "
            "other settings."
        )
    if content.run.error_message:
        lines.append(f"The run ended with an error: {content.run.error_message}")
    return [
        f'<table class="warning" width="100%" cellspacing="0" cellpadding="8" border="2"><tr><td>{escape(text)}'
        "</td></tr></table>"
        for text in lines
    ]


def _summary(content: ReportContent) -> list[str]:
    run, training, report = content.run, content.training, content.report
    model = report.model
    best = "-" if run.best_epoch is None else str(run.best_epoch)
    image_size = model.image_size if model else training.get("image_size")
    rows = [
        ("Run", str(run.id)),
        ("Experiment", run.experiment_name),
        ("Mode / role", f"{run.training_mode} / {run.role}"),
        ("Status", run.status),
        ("Started", local_time(run.start_time)),
        ("Ended", local_time(run.end_time)),
        ("Duration", format_duration(run.duration)),
        (f"Best {content.step_name}", best),
        ("Backbone", model.backbone if model else str(training.get("backbone", "-"))),
        ("Image size", f"{image_size} x {image_size} pixels" if image_size else "-"),
    ]
    for split, counts in report.samples.items():
        rows.append(
            (
                f"{SPLIT_NAMES.get(split, split)} images",
                f"{counts.total} ({counts.positive} pneumonia, {counts.normal} normal)",
            )
        )
    rows.append(("PneumoFL version", __version__))
    return _table(None, [[k, v] for k, v in rows], header_column=True)


def _metrics(content: ReportContent) -> list[str]:
    splits = content.splits
    rows = content.report.metric_rows((*METRIC_ROWS, ("accuracy", "Accuracy")), splits)
    note = _interval_note(content)
    return _table(["Metric", *(SPLIT_NAMES[s] for s in splits)], rows, numeric_from=1) + note


def _points(content: ReportContent) -> list[str]:
    report = content.report
    points = report.points()
    if not points:
        return ["<p>None: the validation images had a single class.</p>"]
    named = [("Run threshold", content.threshold, report.metrics)]
    named += [(LABELS[p.name], p.threshold, p.metrics) for p in points]
    lines = [
        "<p>Each threshold was chosen on the validation images and then applied unchanged to the test images, "
        "so the test table shows what to expect at that setting.</p>"
    ]
    headers = ["Operating point", "Threshold", "Sensitivity", "Specificity", "Precision"]
    for split in content.splits:
        rows = [
            [label, f"{threshold:.3f}"] + [metrics(split).text(k) for k in _POINT_METRICS]
            for label, threshold, metrics in named
            if metrics(split)
        ]
        lines.append(f"<h3>{SPLIT_NAMES[split]}</h3>")
        lines += _table(headers, rows, numeric_from=1, css="grid small")
    return lines


_POINT_METRICS = ("recall", "specificity", "precision")


def _calibration(content: ReportContent) -> list[str]:
    calibration = content.report.calibration
    if calibration is None or not calibration.splits:
        return ["<p>Not measured for this run.</p>"]
    before = calibration.before_scaling
    temperature = calibration.temperature
    headers = ["Split", "Brier score", "Expected calibration error"]
    if before:
        headers += ["Brier before scaling", "ECE before scaling"]
    rows = []
    for split, c in calibration.splits.items():
        row = [SPLIT_NAMES[split], _number(c.brier), _number(c.ece)]
        if before:
            earlier = before.get(split)
            row += [_number(earlier.brier), _number(earlier.ece)] if earlier else ["-", "-"]
        rows.append(row)
    scaling = (
        f"<p>Temperature scaling: T = {temperature:.3f}, fitted on the validation images; every probability "
        "and calibration figure in this report is after scaling.</p>"
        if temperature
        else "<p>No temperature scaling: the probabilities are the model's own.</p>"
    )
    note = (
        '<p class="note">Lower is better for both; an ECE of 0.05 means predictions are off by 5 points on average.</p>'
    )
    return [scaling, note, *_table(headers, rows, numeric_from=1)]


def _interval_note(content: ReportContent) -> list[str]:
    if not content.report.has_intervals:
        return []
    return ['<p class="note">In brackets: 95% confidence interval (stratified bootstrap of the split\'s images).</p>']


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _section(title: str, parts: list[str]) -> list[str]:
    return [f"<h2>{escape(title)}</h2>", *parts]


def _figure(chart: Chart | None, image_source: ImageSource) -> list[str]:
    if chart is None:
        return []
    return [
        f"<h2>{escape(chart.title)}</h2>",
        f'<p><img src="{image_source(chart)}" width="{chart.width}" alt="{escape(chart.title)}"></p>',
        f'<p class="note">{escape(chart.caption)}</p>',
    ]


def _table(
    headers: list[str] | None,
    rows: Iterable[list[str]],
    *,
    header_column: bool = False,
    numeric_from: int | None = None,
    css: str = "grid",
) -> list[str]:
    """A bordered table of plain-text cells (escaped here); ``numeric_from`` right-aligns the later columns."""
    lines = [f'<table class="{css}" cellspacing="0" cellpadding="4" border="1">']
    if headers:
        lines.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr>")
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            if header_column and index == 0:
                cells.append(f"<th>{escape(cell)}</th>")
            elif numeric_from is not None and index >= numeric_from:
                cells.append(f'<td class="num">{escape(cell)}</td>')
            else:
                cells.append(f"<td>{escape(cell)}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return lines
