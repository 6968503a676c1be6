"""Train a pneumonia classifier and record every metric.

Examples
--------
  pneumofl train --demo
  pneumofl train --data ~/xrays --epochs 20 --backbone resnet18 --image-size 224
  pneumofl train --data manifest.csv --csv-image-column patientId --csv-label-column Target --csv-image-root imgs/
  pneumofl train --resume 7

Ctrl-C stops the run after the current batch; it is recorded as cancelled with every completed epoch, and
`pneumofl train --resume RUN_ID` continues it after its last completed epoch (so does a run that crashed or failed).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.broadcast import HubSink
from core.config import BACKBONES, MONITORS, RunConfig, demo_config, load_config
from core.data import PreparedDataset
from core.persistence import Database, FileSink
from core.sinks import ConsoleSink, EventSink
from desktop.cli.common import (
    CommandError,
    add_db_option,
    format_duration,
    open_db,
    stop_on_interrupt,
)
from desktop.cli.data import DATA_FIELDS, add_data_options, check_with_progress
from desktop.cli.serving import add_serve_options, hub_from_args, run_serving
from desktop.cli.stats import format_final_stats

if TYPE_CHECKING:
    from core.training.runner import RunResult

EXIT_CODES = {"completed": 0, "failed": 1, "cancelled": 130}

# CLI flag -> RunConfig field
OVERRIDES = {
    "name": "experiment_name",
    "data": "data_path",
    **{field: field for field in DATA_FIELDS},
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "backbone": "backbone",
    "weights": "weights_path",
    "loss": "loss",
    "patience": "early_stopping_patience",
    "monitor": "monitor",
    "threshold": "threshold",
    "temperature_scaling": "temperature_scaling",
    "threads": "max_threads",
    "workers": "num_workers",
    "accelerator": "accelerator",
}


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    p = commands.add_parser(
        "train",
        help="train a model and record it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--demo", action="store_true", help="use the built-in synthetic demo dataset")
    src.add_argument(
        "--data", metavar="PATH", help="dataset folder (NORMAL/PNEUMONIA, optionally in train/val/test) or CSV"
    )
    src.add_argument(
        "--resume",
        type=int,
        metavar="RUN_ID",
        help="continue an interrupted, cancelled or failed run after its last completed epoch, with its settings",
    )
    p.add_argument("--config", metavar="FILE", help="a saved run configuration (JSON); flags override it")
    p.add_argument("--name", help="experiment name")
    add_data_options(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--backbone", choices=BACKBONES)
    p.add_argument("--weights", metavar="FILE", help="local weights file for the backbone (nothing is downloaded)")
    p.add_argument("--loss", choices=("bce", "focal"))
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (0 = off)")
    p.add_argument("--monitor", choices=MONITORS, help="metric for the best checkpoint and early stopping")
    p.add_argument("--threshold", type=float, help="decision threshold (default 0.5)")
    p.add_argument(
        "--temperature-scaling",
        action="store_const",
        const=True,
        help="fit a temperature on validation; predictions and exports use the calibrated probabilities",
    )
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all)")
    p.add_argument("--workers", type=int, help="dataloader worker processes (default 0)")
    p.add_argument("--accelerator", choices=("auto", "cpu", "gpu", "mps"))
    add_serve_options(p)
    p.add_argument("--export-dir", metavar="DIR", help="also write the run as CSV and JSON files into DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    add_db_option(p)
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> RunConfig:
    """Merge the config file (or the demo/default config) with the command-line flags."""
    overrides = {
        field: getattr(args, flag) for flag, field in OVERRIDES.items() if getattr(args, flag, None) is not None
    }
    if args.config:
        base = load_config(args.config)
    elif args.demo:
        base = demo_config()
    else:
        base = RunConfig()
    if "monitor" in overrides:  # every monitor is "greater is better" except the loss
        overrides["monitor_mode"] = "min" if overrides["monitor"] == "val_loss" else "max"
    if args.demo:
        overrides["demo"] = True
        overrides.setdefault("experiment_name", base.experiment_name)
    if not args.demo and not base.demo and not overrides.get("data_path") and not base.data_path:
        raise CommandError("Give a dataset with --data PATH, or use --demo for the built-in demo data.")
    return base.with_overrides(**overrides).validate()


def run(args: argparse.Namespace) -> int:
    """Prepare the data, train with a progress bar, print the final stats and the run id."""
    if args.resume is not None:
        return resume(args)
    config = build_config(args)
    print("Checking the dataset...", file=sys.stderr)
    data = checked_data(config, args)
    # torch and Lightning load only once there is something to train: a refused run answers in a second or two.
    from core.training.recorded import train_and_record

    db = open_db(args)

    def train(sinks: list[EventSink], cancel: threading.Event) -> RunResult:
        return train_and_record(
            config,
            db,
            sinks=sinks,
            data=data,
            cancel=cancel,
            progress_bar=not args.no_progress,
            on_run_created=lambda rid: print(f"Run {rid} started ({db.url_for_display}).", file=sys.stderr),
        )

    return train_and_report(args, db, train)


def resume(args: argparse.Namespace) -> int:
    """Continue run ``args.resume`` in place, after its last completed epoch."""
    given = [f"--{flag.replace('_', '-')}" for flag in (*OVERRIDES, "config") if getattr(args, flag, None) is not None]
    if given:
        raise CommandError(
            f"--resume continues run {args.resume} with the settings it was started with; leave out {', '.join(given)}."
        )
    from core.training.recorded import plan_resume, resume_and_record

    db = open_db(args)
    try:
        plan = plan_resume(db, args.resume)
        print(f"Checking the dataset of run {args.resume}...", file=sys.stderr)
        data = checked_data(plan.config, args)
    except BaseException:
        db.close()
        raise
    print(
        f"Run {args.resume} resumes after epoch {plan.point.epochs_completed} of {plan.config.epochs} "
        f"({db.url_for_display}).",
        file=sys.stderr,
    )
    return train_and_report(
        args,
        db,
        lambda sinks, cancel: resume_and_record(
            plan, db, sinks=sinks, data=data, cancel=cancel, progress_bar=not args.no_progress
        ),
    )


def checked_data(config: RunConfig, args: argparse.Namespace) -> PreparedDataset:
    """Check the run's images with a progress line, print the summary, refuse data that cannot be trained on."""
    data = check_with_progress(config, not args.no_progress)
    source = data.summary.source
    hint = f"`pneumofl data check {source} --all` lists every one"
    print(data.summary.format(more_hint=hint), file=sys.stderr)
    if not data.summary.ok:
        raise CommandError(
            f"The dataset at {source} cannot be used for training: fix the error(s) listed above "
            f"(`pneumofl data check {source}` checks it again without training)."
        )
    return data


def train_and_report(
    args: argparse.Namespace, db: Database, train: Callable[[list[EventSink], threading.Event], RunResult]
) -> int:
    """Run ``train`` with the console, file and hub sinks; print the final statistics; close ``db``."""
    try:
        hub = hub_from_args(args)
    except BaseException:
        db.close()
        raise
    sinks: list[EventSink] = [ConsoleSink()]
    if args.export_dir:
        sinks.append(FileSink(args.export_dir))
    if hub is not None:
        sinks.append(HubSink(hub))
    cancel = threading.Event()
    try:
        with stop_on_interrupt(cancel, "Stopping after the current batch"):
            result = run_serving(hub, lambda: train(sinks, cancel))
    finally:
        db.close()
    print()
    print(format_final_stats(result.report))
    print()
    best = f"epoch {result.best_epoch}" if result.best_epoch else "-"
    auroc = result.best_metrics.get("val_auroc")
    shown = f"val AUROC {auroc:.4f}" if auroc is not None else "no validation"
    print(f"Run {result.run_id}: {result.status} in {format_duration(result.duration)}; best {best}, {shown}.")
    if result.status == "cancelled" and result.epochs_completed:
        print(f"Continue it after epoch {result.epochs_completed}: pneumofl train --resume {result.run_id}")
    if result.status == "completed" and result.report:
        print(f"Read images with it: pneumofl predict --run {result.run_id} IMAGES... --cam heatmaps/")
    if args.export_dir:
        print(f"Run files written to {Path(args.export_dir).expanduser()}.")
    if result.status == "failed":
        raise CommandError(f"Run {result.run_id} failed: {result.error}", EXIT_CODES["failed"])
    return EXIT_CODES[result.status]
