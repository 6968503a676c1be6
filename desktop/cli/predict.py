"""Read chest X-rays with a trained model: probability of pneumonia, decision, and where it looked.

Examples
--------
  pneumofl predict --run 12 scans/
  pneumofl predict --run 12 scans/ --operating-point sens95 --cam heatmaps/ -o readings.csv
  pneumofl predict --model exported/pneumofl-run12.onnx scans/a.dcm scans/b.png
  pneumofl predict --run 12 --pacs main --study STUDY_UID --store-results
  pneumofl predict --run 12 scans/ --dicom-out answers/

The decision is PNEUMONIA when the probability is above the operating point's threshold, chosen on the run's
validation images: youden (best sensitivity + specificity), sens95 (sensitivity >= 0.95), spec95
(specificity >= 0.95), default (the run's configured threshold) or a number such as 0.5.
Every reading is recorded in the database (file name, image SHA-256, probability, threshold, decision).
--pacs reads a study's CR/DX/DR images from a PACS (see `pneumofl pacs`); --store-results sends, for each DICOM
image, a structured report and a Grad-CAM secondary capture into its study; --dicom-out writes them as files.
Both are marked "not for diagnostic use".
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from desktop.cli.common import CommandError, add_db_option, check_progress, format_table, open_db, stop_on_interrupt

if TYPE_CHECKING:
    from core.inference.models import ReadingModel
    from core.inference.reader import Reading
    from core.pacs.nodes import PacsNode
    from core.pacs.pipeline import StudyReading
    from core.pacs.study import Answers
    from core.persistence import Database


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
    p.add_argument("paths", nargs="*", metavar="PATH", help="image files (PNG, JPEG, DICOM) or folders of them")
    p.add_argument("--pacs", metavar="NAME", help="read a study from this PACS instead of files (see pneumofl pacs)")
    p.add_argument("--study", metavar="STUDY_UID", help="the study to read from --pacs (pneumofl pacs find lists them)")
    p.add_argument(
        "--store-results", action="store_true", help="send each image's DICOM report and heatmap capture to --pacs"
    )
    p.add_argument("--dicom-out", metavar="DIR", help="write each DICOM image's report and heatmap capture into DIR")
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
    """Load the model, read every image, print or write the readings, answer them as DICOM, record them."""
    from core.inference.models import load_exported_model, load_run_model
    from core.inference.reader import image_paths, read_images, reading_row, record_readings, write_csv

    pacs = _pacs_source(args)
    db = open_db(args) if args.run is not None or not args.no_record or pacs else None
    cancel = threading.Event()
    retrieved: Path | None = None
    stopped: Exception | None = None  # why reading a PACS study stopped early
    try:
        model = load_run_model(db, args.run) if args.run is not None else load_exported_model(Path(args.model))
        cam_dir = Path(args.cam).expanduser() if args.cam else None
        if cam_dir is not None:
            _make_dir(cam_dir)
        answering = bool(args.store_results or args.dicom_out)
        cam = (cam_dir is not None or answering) and model.explains
        readings: list[tuple[Reading, Path | None]] = []
        written: set[str] = set()

        def keep(reading: Reading) -> None:
            readings.append((reading, _save_heatmap(reading, cam_dir, written) if cam_dir else None))

        answers: Answers | None = None
        with stop_on_interrupt(cancel, "Stopping after this batch"), check_progress(not args.no_progress) as progress:
            if pacs is not None:
                assert db is not None
                study = _read_study(args, db, pacs, model, cam, cancel, progress, keep)
                retrieved, answers, stopped = study.folder, study.answers, study.error
                readings.sort(key=lambda pair: pair[0].path.name)  # read as they arrived; shown in a fixed order
            else:
                for reading in read_images(
                    model, image_paths(args.paths), args.operating_point, cam=cam, cancel=cancel, progress=progress
                ):
                    keep(reading)
        if answering and pacs is None and not cancel.is_set():
            answers = _answer(model, [r for r, _ in readings])
        if answers is not None:
            _write_answers(args, answers)
        if db is not None and not args.no_record:
            uids = answers.uids() if answers is not None else None
            recorded = record_readings(db, model, [r for r, _ in readings], uids)
            print(f"{recorded} reading(s) recorded in {db.url_for_display}.", file=sys.stderr)
    finally:
        if db is not None:
            db.close()
        if retrieved is not None:
            from core.pacs.study import forget_retrieval

            forget_retrieval(retrieved)
    rows = [reading_row(reading, heatmap) for reading, heatmap in readings]
    if pacs is not None:  # a cache file's name is its SOP instance UID; the folder is gone
        for row, (reading, _) in zip(rows, readings):
            row["file"] = reading.path.name
    if args.output:
        write_csv(Path(args.output).expanduser(), rows)
        print(f"{len(rows)} reading(s) written to {args.output}.", file=sys.stderr)
    else:
        columns = ["file", "probability", "decision", "threshold"] + (["heatmap"] if cam_dir else [])
        columns += [c for c in ("warnings", "error") if any(r[c] for r in rows)]
        print(format_table(rows, columns))
    point = readings[0][0].operating_point if readings else args.operating_point
    threshold = readings[0][0].threshold if readings else None
    positives = sum(r.decision == "PNEUMONIA" for r, _ in readings)
    failed = sum(r.error is not None for r, _ in readings)
    summary = f"{len(readings)} image(s) read with {model.name} at {point}"
    summary += f" (threshold {threshold:.3f})" if threshold is not None else ""
    print(f"{summary}: {positives} PNEUMONIA, {len(readings) - positives - failed} NORMAL, {failed} unreadable.")
    warned = sum(bool(r.warnings) for r, _ in readings)
    if warned:
        print(f"{warned} image(s) differ from what the model was trained on: see their warnings before trusting them.")
    if cancel.is_set():
        return 130
    if stopped is not None:
        raise stopped  # said as one sentence, after what was read is shown and recorded
    return 0 if not failed else 1


def _pacs_source(args: argparse.Namespace) -> PacsNode | None:
    """The PACS node to read from (``--pacs``), after checking the options go together."""
    if args.pacs and not args.study:
        raise CommandError("--pacs needs --study STUDY_UID: pneumofl pacs find lists the studies.")
    if args.study and not args.pacs:
        raise CommandError("--study needs --pacs NAME: the PACS that holds the study.")
    if args.pacs and args.paths:
        raise CommandError("Give image paths or --pacs with --study, not both.")
    if not args.pacs and not args.paths:
        raise CommandError("Give the images to read (files or folders), or --pacs NAME --study STUDY_UID.")
    if args.store_results and not args.pacs:
        raise CommandError("--store-results sends the answers to the PACS the study came from: add --pacs and --study.")
    if not args.pacs:
        return None
    from core.pacs.nodes import load_settings

    return load_settings().node(args.pacs)


def _read_study(
    args: argparse.Namespace,
    db: Database,
    node: PacsNode,
    model: ReadingModel,
    cam: bool,
    cancel: threading.Event,
    progress: Callable[[int, int], None],
    keep: Callable[[Reading], None],
) -> StudyReading:
    """Retrieve the study and read it as it arrives; answer each image and send it with --store-results."""
    from core.pacs.nodes import load_settings
    from core.pacs.pipeline import read_study

    print(f"Retrieving study {args.study} from PACS {node.name} and reading it as it arrives...", file=sys.stderr)
    answering = bool(args.store_results or args.dicom_out)
    study = read_study(
        db,
        node,
        args.study,
        model,
        args.operating_point,
        cam=cam,
        uid_root=load_settings().uid_root if answering else None,
        send=args.store_results,
        cancel=cancel,
        progress=progress,
        on_reading=keep,
    )
    print(f"Retrieved {study.retrieved} X-ray image(s).", file=sys.stderr)
    if args.store_results and study.answers.results:
        n = len(study.answers.results)
        print(f"Sent {2 * n} DICOM object(s) ({n} reports, {n} heatmaps) to PACS {node.name}.", file=sys.stderr)
    return study


def _answer(model: ReadingModel, readings: list[Reading]) -> Answers:
    """The DICOM answers of readings of files (--dicom-out)."""
    from core.pacs.nodes import load_settings
    from core.pacs.study import answer

    return answer(readings, model, load_settings().uid_root)


def _write_answers(args: argparse.Namespace, answers: Answers) -> None:
    """Say which images got no answer; write the answers into --dicom-out."""
    from core.pacs.study import write_answers

    for path, problem in answers.problems.items():
        print(f"pneumofl: no DICOM answer for {path.name}: {problem}", file=sys.stderr)
    if args.dicom_out and answers.results:
        files = write_answers(answers, Path(args.dicom_out).expanduser())
        print(f"Wrote {len(files)} DICOM file(s) into {args.dicom_out}.", file=sys.stderr)


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
