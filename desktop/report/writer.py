"""Write a run's report to a file: a self-contained HTML page or a PDF, chosen by the file's suffix."""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path

from core.errors import PneumoFLError
from core.persistence import Database
from desktop.report.charts import Chart, render_charts
from desktop.report.content import load_content
from desktop.report.page import render_html

SUFFIXES = (".html", ".pdf")


def write_report(db: Database, run_id: int, path: Path) -> Path:
    """Write the report of run ``run_id`` to ``path`` and return the path.

    Parameters
    ----------
    db
        The open database holding the run.
    run_id
        The run.
    path
        ``.html``: one self-contained page (charts embedded as PNG ``data:`` URIs, inline CSS, nothing
        fetched from elsewhere). ``.pdf``: the same page laid out by Qt on A4 pages.

    Raises
    ------
    core.errors.PneumoFLError
        If the suffix is neither ``.html`` nor ``.pdf``, or ``path`` cannot be written.
    core.errors.RunNotFoundError
        If the run does not exist.
    core.errors.DatabaseError
        If the database cannot be read.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise PneumoFLError(f"Cannot write the report to {path}: the file name must end in .html (a web page) or .pdf.")
    if not path.parent.is_dir():
        raise PneumoFLError(
            f"Cannot write the report to {path}: the folder {path.parent} does not exist. "
            "Create it or choose another folder."
        )
    content = load_content(db, run_id)
    charts = render_charts(content)
    if suffix == ".html":
        data = render_html(content, charts, _data_uri).encode("utf-8")
    else:
        from desktop.report.pdf import pdf_bytes  # Qt is loaded only for a PDF

        html = render_html(content, charts, lambda chart: chart.name)
        title = f"PneumoFL report of run {run_id}: {content.run.experiment_name}"
        data = pdf_bytes(html, {chart.name: chart.png for chart in charts.values()}, title=title)
    _write(path, data)
    return path


def _data_uri(chart: Chart) -> str:
    return "data:image/png;base64," + base64.b64encode(chart.png).decode("ascii")


def _write(path: Path, data: bytes) -> None:
    """Write through a partial file, so a failed write never leaves half a report under the real name."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise PneumoFLError(
            f"Cannot write the report to {path}: {exc.strerror or exc}. Choose a folder you can write to."
        ) from None
