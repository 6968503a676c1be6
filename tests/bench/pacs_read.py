"""Reading a PACS study end to end vs ``predict --cam`` on the same files already on disk.

A study of ``--images`` CR images, ``--size`` pixels square at 12 bits, is stored in a real Orthanc (Debian's
package, started here on free loopback ports). Timed, in images per second:

- **disk** (the baseline): what ``pneumofl predict --run N FILES --cam DIR`` does with the files on disk:
  ``read_images(..., cam=True)`` and one heatmap PNG per image;
- **pacs**: what ``pneumofl predict --run N --pacs NAME --study UID --store-results`` does
  (:func:`core.pacs.pipeline.read_study`): C-FIND the study's series, C-GET them into the cache, and, while the
  rest still arrive, read each batch that has arrived with Grad-CAM, make a DICOM SR and an RGB secondary capture
  per image and C-STORE them back into the study (the audit trail in a scratch SQLite).
  ``--serial`` times the steps one after another instead (retrieve, then read, then answer and store), to show
  what the overlap gains.

The model is a resnet18 at ``--image-size`` px with random weights (speed does not depend on them). The two
alternate over ``--repeats`` and medians are reported.

Usage: .venv/bin/python tests/bench/pacs_read.py [--images 50] [--size 1024] [--image-size 224] [--repeats 3]
Last line: JSON {"images", "size", "image_size", "threads", "disk_images_per_s", "pacs_images_per_s", "ratio",
"overlapped", "pacs_seconds": {"retrieve", "read", "answer_and_store"} (with --serial)}. Target: ratio >= 0.7.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
from pydicom.uid import generate_uid

from core.audit.key import KEY_DIR_ENV
from core.inference.models import ReadingModel
from core.inference.overlay import overlay_png
from core.inference.reader import read_images
from core.model.backbones import build_backbone
from core.pacs.nodes import PacsNode
from core.pacs.pipeline import read_study
from core.pacs.retrieve import retrieve_study
from core.pacs.study import answer_and_send
from core.persistence import Database
from core.reporting import RunReport
from tests.pacs.orthanc import ORTHANC_AE, Orthanc
from tests.pacs.studies import chest_image

UID_ROOT = "1.2.826.0.1.3680043.8.498."


def read_from_disk(model: ReadingModel, paths: list[Path], out: Path) -> float:
    """Seconds for ``predict --cam``: readings with heatmaps, one overlay PNG per image."""
    started = time.perf_counter()
    for reading in read_images(model, paths, "default", cam=True):
        assert reading.heatmap is not None, reading.error
        overlay_png(reading.path, reading.heatmap, out / f"{reading.path.stem}.cam.png")
    return time.perf_counter() - started


def read_from_pacs(model: ReadingModel, node: PacsNode, study: str, db: Database, images: int) -> dict[str, float]:
    """Seconds of ``predict --pacs --study --store-results``: retrieval, reading and answering overlap."""
    started = time.perf_counter()
    outcome = read_study(db, node, study, model, "default", cam=True, uid_root=UID_ROOT, send=True)
    seconds = {"total": time.perf_counter() - started}
    assert outcome.error is None and len(outcome.answers.results) == images, (outcome.error, outcome.answers.problems)
    shutil.rmtree(outcome.folder, ignore_errors=True)
    return seconds


def read_from_pacs_serially(
    model: ReadingModel, node: PacsNode, study: str, cache: Path, db: Database, images: int
) -> dict[str, float]:
    """Seconds of each step of ``predict --pacs --study --store-results`` done one after another."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    files = retrieve_study(node, study, cache)
    seconds["retrieve"] = time.perf_counter() - started
    mark = time.perf_counter()
    readings = list(read_images(model, sorted(files), "default", cam=True))
    seconds["read"] = time.perf_counter() - mark
    mark = time.perf_counter()
    answers, sent = answer_and_send(db, node, readings, model, UID_ROOT)
    assert not answers.problems and sent == 2 * len(readings), answers.problems
    seconds["answer_and_store"] = time.perf_counter() - mark
    shutil.rmtree(cache, ignore_errors=True)
    seconds["total"] = time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serial", action="store_true", help="retrieve, then read, then answer: no overlap")
    parser.add_argument(
        "--pacs-dir",
        default=None,
        help="where Orthanc keeps its files (e.g. /dev/shm: a PACS whose disk is not the limit)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = build_backbone("resnet18").eval()
    model = ReadingModel("bench", "resnet18", args.image_size, "0" * 64, RunReport(), backbone=backbone)
    with tempfile.TemporaryDirectory(prefix="pneumofl-bench-pacs-") as folder:
        root = Path(folder)
        os.environ[KEY_DIR_ENV] = str(root / "audit-keys")  # the scratch trail's key, not the user's
        for name in ("CACHE", "CONFIG"):  # the retrieval cache and PACS settings, not the user's
            os.environ[f"XDG_{name}_HOME"] = str(root / name.lower())
        db = Database.open(f"sqlite:///{root / 'bench.db'}")
        orthanc = Orthanc(Path(tempfile.mkdtemp(prefix="pneumofl-bench-orthanc-", dir=args.pacs_dir))).start()
        try:
            study = generate_uid()
            paths = [
                chest_image(
                    root / "study" / f"{i:03d}.dcm", study_uid=study, patient_id="BENCH", size=args.size, seed=i
                )
                for i in range(args.images)
            ]
            for path in paths:
                orthanc.upload(path)
            node = PacsNode("bench", ORTHANC_AE, "127.0.0.1", orthanc.dicom_port)
            (root / "cams").mkdir()
            read_from_disk(model, paths[:4], root / "cams")  # warm-up: first-call costs belong to neither side
            disk, pacs = [], []
            for repeat in range(args.repeats):
                for side in ("disk", "pacs") if repeat % 2 == 0 else ("pacs", "disk"):
                    if side == "disk":
                        disk.append(read_from_disk(model, paths, root / "cams"))
                    else:
                        pacs.append(
                            read_from_pacs_serially(model, node, study, root / f"cache-{repeat}", db, args.images)
                            if args.serial
                            else read_from_pacs(model, node, study, db, args.images)
                        )
                print(f"repeat {repeat + 1}: disk {disk[-1]:.1f} s, pacs {pacs[-1]['total']:.1f} s", flush=True)
        finally:
            db.close()
            orthanc.stop()
            shutil.rmtree(orthanc.folder, ignore_errors=True)
    disk_rate = args.images / statistics.median(disk)
    pacs_rate = args.images / statistics.median(p["total"] for p in pacs)
    steps = {
        k: round(statistics.median(p[k] for p in pacs), 2)
        for k in ("retrieve", "read", "answer_and_store")
        if args.serial
    }
    print(f"disk (predict --cam): {disk_rate:.2f} images/s; PACS to SR + capture stored: {pacs_rate:.2f} images/s")
    if steps:
        print(f"PACS steps one after another (median s): {steps}")
    result = {
        "images": args.images,
        "size": args.size,
        "image_size": args.image_size,
        "threads": torch.get_num_threads(),
        "disk_images_per_s": round(disk_rate, 3),
        "pacs_images_per_s": round(pacs_rate, 3),
        "ratio": round(pacs_rate / disk_rate, 3),
        "overlapped": not args.serial,
        "pacs_seconds": steps,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
