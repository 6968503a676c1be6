"""Tiny test images (PNG, JPEG, DICOM) and dataset layouts written to a temporary folder."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image


def pixels(name: str, size: int = 32) -> np.ndarray:
    """Noise seeded by ``name``, so no two test images are identical by accident."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return rng.integers(0, 256, size=(size, size), dtype=np.uint8)


def write_image(path: Path, size: int = 32, array: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pixels(str(path.name) + str(path.parent), size) if array is None else array
    Image.fromarray(data).save(path)
    return path


def make_folder_dataset(
    root: Path,
    counts: dict[str, tuple[int, int]],
    ext: str = ".png",
    class_names: tuple[str, str] = ("NORMAL", "PNEUMONIA"),
) -> Path:
    """Write ``root/{split}/{class}/*`` for each ``split: (n_normal, n_pneumonia)``; split "" means no split folder."""
    for split, per_class in counts.items():
        for class_name, n in zip(class_names, per_class, strict=True):
            folder = root / split / class_name if split else root / class_name
            for i in range(n):
                write_image(folder / f"{class_name.lower()}_{i:03d}{ext}")
    return root


def write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable[object]]) -> Path:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    center: float | None = None,
    width: float | None = None,
    explicit: bool = True,
) -> Path:
    """Write a real single-frame uint16 DICOM file with optional rescale and window."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if explicit else ImplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0
    if center is not None:
        ds.WindowCenter = center
        ds.WindowWidth = width
    ds.PixelData = stored.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
