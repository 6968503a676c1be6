"""Read chest X-rays with a trained model: probability of pneumonia, decision, and where it looked.

Examples
--------
  pneumofl predict --run 12 scans/
  pneumofl predict --run 12 scans/ --operating-point sens95 --cam heatmaps/ -o readings.csv
  pneumofl predict --model exported/pneumofl-run12.onnx scans/a.dcm scans/b.png

The decision is PNEUMONIA when the probability is above the operating point's threshold, chosen on the run's
validation images: youden (best sensitivity + specificity), sens95 (sensitivity >= 0.95), spec95
(specificity >= 0.95), default (the run's configured threshold) or a number such as 0.5.
Every reading is recorded in the database (file name, image SHA-256, probability, threshold, decision).
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from desktop.cli.common import CommandError, add_db_option, check_progress, format_table, open_db, stop_on_interrupt

if TYPE_CHECKING:
    from core.inference.reader import Reading


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``predict`` command."""
    p = commands.add_parser(
        "predict",
        help="read images with a trained run or an exported model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=int, metavar="RUN_ID", help="a recorded run (its best weights)")
    which.add_argument("--model", metavar="FILE", help="an exported .onnx or .pt file (its .card.json next to it)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files (PNG, JPEG, DICOM) or folders of them")
    p.add_argument(
        "--operating-point",
        default="youden",
        metavar="POINT",
        help="youden, sens95, spec95, default or a threshold between 0 and 1 (default youden)",
    )
    p.add_argument("--cam", metavar="DIR", help="write a Grad-CAM heatmap over each image as PNG into DIR")
    p.add_argument("-o", "--output", metavar="FILE", help="write the readings as CSV (default: a table on screen)")
    p.add_argument("--no-record", action="store_true", help="do not record the readings in the database")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_db_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, read every image, print or write the readings, record them."""
    from core.inference.models import load_exported_model, load_run_model
    from core.inference.reader import image_paths, read_images, reading_row, record_readings, write_csv

    paths = image_paths(args.paths)
    db = open_db(args) if args.run is not None or not args.no_record else None
    cancel = threading.Event()
    try:
        model = load_run_model(db, args.run) if args.run is not None else load_exported_model(Path(args.model))
        cam_dir = Path(args.cam).expanduser() if args.cam else None
        if cam_dir is not None:
            _make_dir(cam_dir)
        readings = []
        written: set[str] = set()
        with check_progress(not args.no_progress) as progress, stop_on_interrupt(cancel, "Stopping after this batch"):
            for reading in read_images(
                model, paths, args.operating_point, cam=cam_dir is not None, cancel=cancel, progress=progress
            ):
                readings.append((reading, _save_heatmap(reading, cam_dir, written) if cam_dir else None))
        if db is not None and not args.no_record:
            recorded = record_readings(db, model, [r for r, _ in readings])
            print(f"{recorded} reading(s) recorded in {db.url_for_display}.", file=sys.stderr)
    finally:
        if db is not None:
            db.close()
    rows = [reading_row(reading, heatmap) for reading, heatmap in readings]
    if args.output:
        write_csv(Path(args.output).expanduser(), rows)
        print(f"{len(rows)} reading(s) written to {args.output}.", file=sys.stderr)
    else:
        columns = ["file", "probability", "decision", "threshold"] + (["heatmap"] if cam_dir else []) + ["error"]
        print(format_table(rows, [c for c in columns if c != "error" or any(r["error"] for r in rows)]))
    point = readings[0][0].operating_point if readings else args.operating_point
    threshold = readings[0][0].threshold if readings else None
    positives = sum(r.decision == "PNEUMONIA" for r, _ in readings)
    failed = sum(r.error is not None for r, _ in readings)
    summary = f"{len(readings)} image(s) read with {model.name} at {point}"
    summary += f" (threshold {threshold:.3f})" if threshold is not None else ""
    print(f"{summary}: {positives} PNEUMONIA, {len(readings) - positives - failed} NORMAL, {failed} unreadable.")
    if cancel.is_set():
        return 130
    return 0 if not failed else 1


def _make_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"Cannot create the heatmap folder {folder} ({exc.strerror or exc}).") from None


def _save_heatmap(reading: Reading, folder: Path, written: set[str]) -> Path | None:
    """``DIR/<image name>.cam.png``; images of the same name from different folders get ``-2``, ``-3``..."""
    from core.inference.overlay import overlay_png

    if reading.heatmap is None:
        return None
    name, n = f"{reading.path.stem}.cam.png", 1
    while name in written:
        n += 1
        name = f"{reading.path.stem}-{n}.cam.png"
    written.add(name)
    target = folder / name
    overlay_png(reading.path, reading.heatmap, target)
    return target
