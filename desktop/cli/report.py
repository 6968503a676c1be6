"""Write a run's report for people: a self-contained HTML page or a PDF.

The report holds the run's summary, its final metrics with 95% intervals, confusion matrices, the operating
points, calibration, the ROC curve, reliability diagrams and the training curves. The file's suffix chooses
the format; the HTML page embeds its charts and needs nothing else to be opened or mailed.

Examples
--------
  pneumofl runs report 12 -o run12.html
  pneumofl runs report 12 -o run12.pdf
"""

from __future__ import annotations

import argparse
from pathlib import Path

from desktop.cli.common import add_db_option, open_db


def add_report_command(sub: argparse._SubParsersAction) -> None:
    """Add ``report RUN_ID -o PATH`` to a command's subcommands (``pneumofl runs report``)."""
    p = sub.add_parser(
        "report",
        help="write the run's report as a self-contained HTML page or a PDF",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_id", type=int, help="the run (see pneumofl runs list)")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="the report file: .html or .pdf")
    add_db_option(p)
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    """Write the report and say where."""
    from desktop.report import write_report  # matplotlib (and Qt for a PDF) load only for this command

    db = open_db(args)
    try:
        path = write_report(db, args.run_id, Path(args.output).expanduser())
    finally:
        db.close()
    print(f"Report of run {args.run_id} written to {path}.")
    return 0
