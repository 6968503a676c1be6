"""Check a dataset without training: every image is read and decoded as training will, every problem listed.

Examples
--------
  pneumofl data check ~/pacs-export
  pneumofl data check labels.csv --csv-image-column patientId --csv-label-column Target --csv-image-root dcm/
  pneumofl data check ~/pacs-export --format json > check.json

Exits 0 when the data can be trained on, 2 when it cannot (the errors say why), 130 when stopped with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import TYPE_CHECKING

from core.config import RunConfig
from desktop.cli.common import check_progress, stop_on_interrupt

if TYPE_CHECKING:  # the data code (pydicom) loads when a command checks data
    from core.data.summary import PreparedDataset

# The options `data check` and `train` share; each flag is its RunConfig field's name.
DATA_FIELDS = (
    "data_kind",
    "csv_image_column",
    "csv_label_column",
    "csv_image_root",
    "val_fraction",
    "test_fraction",
    "max_bad_fraction",
    "image_size",
    "seed",
)


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The options that say how to read a dataset (shared by ``data check`` and ``train``)."""
    p.add_argument("--data-kind", choices=("auto", "folder", "csv"), help="how to read PATH (default: auto)")
    p.add_argument("--csv-image-column", metavar="COL", help="manifest column with the image file or id")
    p.add_argument("--csv-label-column", metavar="COL", help="manifest column with the label")
    p.add_argument("--csv-image-root", metavar="DIR", help="folder the manifest's image names are relative to")
    p.add_argument("--val-fraction", type=float, help="share of each class for validation (default 0.15)")
    p.add_argument("--test-fraction", type=float, help="share of each class for test (default 0.15)")
    p.add_argument(
        "--max-bad-fraction", type=float, help="share of unusable images that still allows training (default 0.05)"
    )
    p.add_argument("--image-size", type=int, help="side length training resizes images to (default 224)")
    p.add_argument("--seed", type=int, help="seed of the split")


def check_with_progress(config: RunConfig, show_progress: bool) -> PreparedDataset:
    """Check the configured dataset with a progress bar; the first Ctrl-C stops the check (exit 130)."""
    cancel = threading.Event()
    with stop_on_interrupt(cancel, "Stopping the check"), check_progress(show_progress) as progress:
        from core.data.validation import check_data

        return check_data(config, progress=progress, cancel=cancel)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``data check``."""
    data = commands.add_parser("data", help="check a dataset without training", description=__doc__)
    sub = data.add_subparsers(dest="data_command", required=True, metavar="{check}")
    p = sub.add_parser(
        "check",
        help="read every image as training will and list every problem",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "path", metavar="PATH", help="dataset folder (NORMAL/PNEUMONIA, optionally in train/val/test) or CSV"
    )
    add_data_options(p)
    p.add_argument("--format", choices=("text", "json"), default="text", help="json lists every problem file")
    p.add_argument("--all", action="store_true", help="list every problem in the text report (default: first 20)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the dataset at ``args.path`` and print the report; 0 when trainable, 2 when not."""
    overrides = {field: getattr(args, field) for field in DATA_FIELDS if getattr(args, field) is not None}
    config = RunConfig(data_path=args.path).with_overrides(**overrides).validate()
    summary = check_with_progress(config, not args.no_progress).summary
    if args.format == "json":
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        hint = f"add --all to list every one, or --format json for every file with its reason (pneumofl data check {args.path} --format json)"
        print(summary.format(limit=None if args.all else 20, more_hint=hint))
    if not summary.ok:
        print(
            f"pneumofl: the dataset at {summary.source} cannot be used for training: fix the error(s) above.",
            file=sys.stderr,
        )
        return 2
    return 0
