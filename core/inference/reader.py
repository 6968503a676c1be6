"""Read images with a model: probability, decision at an operating point, optional Grad-CAM; then record them.

Images go through the very loaders and eval transforms of training (PNG, JPEG, DICOM). Files are read and
decoded by a small thread pool while the model runs on the previous batch (decoding and torch both release the
GIL), so reading keeps up with a plain forward loop.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.audit import kinds, record_safely
from core.data.dataset import build_transforms
from core.data.fingerprint import image_facts, image_warnings
from core.data.images import decode_image, is_image_file, read_image_bytes
from core.errors import DataError, PneumoFLError
from core.inference.gradcam import GradCam
from core.inference.models import ReadingModel
from core.persistence import Database
from core.persistence.predictions import record_predictions

DECISIONS = ("NORMAL", "PNEUMONIA")
CSV_COLUMNS = (
    "file",
    "probability",
    "decision",
    "operating_point",
    "threshold",
    "image_sha256",
    "heatmap",
    "warnings",
    "error",
)
BATCH_SIZE = 16
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Reading:
    """What the model said about one image (``error`` instead, when the file could not be read)."""

    path: Path
    operating_point: str
    threshold: float
    image_sha256: str = ""
    probability: float | None = None
    heatmap: np.ndarray | None = None  # float32 (S, S) in [0, 1], at the model's input size
    error: str | None = None
    warnings: tuple[str, ...] = ()  # how the image differs from the training data (core.data.fingerprint)

    @property
    def decision(self) -> str | None:
        """``PNEUMONIA`` when the probability is above the threshold, else ``NORMAL`` (None on error)."""
        if self.probability is None:
            return None
        return DECISIONS[int(self.probability > self.threshold)]


def image_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders searched recursively, in a stable order.

    Raises
    ------
    DataError
        For a path that does not exist, or when no PNG, JPEG or DICOM file is found.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path} does not exist: give image files or folders of them.")
    if not found:
        raise DataError(
            "No images found (PNG, JPEG or DICOM with a .dcm suffix) in " + ", ".join(map(str, inputs)) + "."
        )
    return found


def read_images(
    model: ReadingModel,
    paths: Sequence[Path],
    operating_point: str = "youden",
    *,
    cam: bool = False,
    batch_size: int = BATCH_SIZE,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
) -> Iterator[Reading]:
    """Yield one :class:`Reading` per path, in order.

    Parameters
    ----------
    model
        From :func:`core.inference.models.load_run_model` or :func:`~core.inference.models.load_exported_model`.
    paths
        Image files (see :func:`image_paths`).
    operating_point
        ``youden``, ``sens95``, ``spec95``, ``default`` or a threshold (see :meth:`ReadingModel.threshold`).
    cam
        Add a Grad-CAM heatmap to each reading.
    cancel
        Set it to stop after the current batch.
    progress
        Called with ``(done, total)`` after each batch.

    Raises
    ------
    PneumoFLError
        For an unknown operating point, or ``cam`` with a model that cannot be explained (ONNX).
    """
    point, threshold = model.threshold(operating_point)
    if cam and not model.explains:
        raise PneumoFLError(
            f"{model.name} is an ONNX file, which cannot show where it looked: use the run, or a TorchScript export."
        )
    explainer = GradCam(model.backbone, model.backbone_name) if cam and model.backbone is not None else None
    transform = build_transforms(model.image_size, train=False)

    def load(path: Path) -> tuple[str, torch.Tensor | None, str | None, tuple[str, ...]]:
        try:
            data = read_image_bytes(path)
            pixels = decode_image(path, data, model.image_size).pixels
        except DataError as exc:
            return "", None, str(exc), ()
        warnings: tuple[str, ...] = ()
        if model.fingerprint:  # never changes the probability: a sentence next to it
            warnings = tuple(image_warnings(image_facts(path, data), float(pixels.mean()), model.fingerprint))
        return hashlib.sha256(data).hexdigest(), transform(pixels), None, warnings

    done = 0
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="pneumofl-read") as pool:
        batches = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
        pending: list[Future] = [pool.submit(lambda b=b: [load(p) for p in b]) for b in batches[:2]]
        for index, batch in enumerate(batches):
            if cancel is not None and cancel.is_set():
                return
            loaded = pending[index].result()
            if index + 2 < len(batches):  # keep two batches decoding ahead of the model
                pending.append(pool.submit(lambda b=batches[index + 2]: [load(p) for p in b]))
            yield from _read_batch(model, batch, loaded, point, threshold, explainer)
            done += len(batch)
            if progress is not None:
                progress(done, len(paths))


def _read_batch(
    model: ReadingModel,
    paths: list[Path],
    loaded: list[tuple[str, torch.Tensor | None, str | None, tuple[str, ...]]],
    point: str,
    threshold: float,
    explainer: GradCam | None,
) -> Iterator[Reading]:
    good = [i for i, (_, image, _, _) in enumerate(loaded) if image is not None]
    probs: list[float] = []
    maps: torch.Tensor | None = None
    if good:
        images = torch.stack([loaded[i][1] for i in good])  # type: ignore[misc]
        probs = model.probabilities(images).tolist()
        if explainer is not None:
            maps = explainer.heatmaps(images)
    by_index = {i: k for k, i in enumerate(good)}
    for i, (path, (sha, _, error, warnings)) in enumerate(zip(paths, loaded)):
        if error is not None:
            yield Reading(path, point, threshold, error=error)
            continue
        k = by_index[i]
        heatmap = maps[k].numpy().astype(np.float32) if maps is not None else None
        yield Reading(path, point, threshold, sha, probs[k], heatmap, warnings=warnings)


def record_readings(
    db: Database,
    model: ReadingModel,
    readings: Iterable[Reading],
    answers: Mapping[Path, tuple[str, str]] | None = None,
) -> int:
    """Keep the readings in ``predictions`` (file name, image SHA-256, probability, threshold, decision).

    Never pixel data or the folder the image was in. ``answers`` gives, by image, the SOP instance UIDs of the
    DICOM report and capture that answered it. The audit trail gets one entry saying how many images which model
    read. Returns how many were recorded.
    """
    answers = answers or {}
    rows = [
        {
            "run_id": model.run_id,
            "model_sha256": model.weights_sha256,
            "image_sha256": r.image_sha256,
            "file_name": r.path.name[:255],
            "probability": r.probability,
            "operating_point": r.operating_point,
            "threshold": r.threshold,
            "decision": r.decision,
            "warnings": "; ".join(r.warnings) or None,
            "report_uid": answers.get(r.path, (None, None))[0],
            "capture_uid": answers.get(r.path, (None, None))[1],
        }
        for r in readings
        if r.probability is not None
    ]
    with db.begin() as session:
        record_predictions(session, rows)
    if rows:
        details = {
            "count": len(rows),
            "run_id": model.run_id,
            "model": model.name,
            "model_sha256": model.weights_sha256,
        }
        record_safely(db, kinds.IMAGES_READ, details)
    return len(rows)


def reading_row(reading: Reading, heatmap_file: Path | None = None) -> dict[str, object]:
    """One reading as a CSV/table row (see :data:`CSV_COLUMNS`)."""
    return {
        "file": str(reading.path),
        "probability": None if reading.probability is None else round(reading.probability, 6),
        "decision": reading.decision,
        "operating_point": reading.operating_point,
        "threshold": round(reading.threshold, 6),
        "image_sha256": reading.image_sha256,
        "heatmap": str(heatmap_file) if heatmap_file else "",
        "warnings": "; ".join(reading.warnings),
        "error": reading.error or "",
    }


def write_csv(path: Path, rows: Iterable[dict[str, object]]) -> None:
    """Write reading rows as CSV.

    Raises
    ------
    PneumoFLError
        Naming the file, when it cannot be written.
    """
    try:
        with path.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise PneumoFLError(f"Cannot write {path} ({exc.strerror or exc}): choose another file.") from None


def at_threshold(readings: Iterable[Reading], operating_point: str, threshold: float) -> list[Reading]:
    """The same readings decided at another operating point (the probabilities do not change)."""
    return [dataclasses.replace(r, operating_point=operating_point, threshold=threshold) for r in readings]
