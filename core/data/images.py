"""Reading chest X-ray images (JPEG, PNG, DICOM) as 8-bit grayscale arrays, and cheap integrity probes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import DataError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".dcm")
DICOM_EXTENSION = ".dcm"
# Uncompressed transfer syntaxes: only for these can the pixel data length be checked without decoding.
_UNCOMPRESSED_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")


def is_image_file(path: Path) -> bool:
    """Return True for a visible file with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def load_image(path: Path) -> np.ndarray:
    """Decode an image file to an 8-bit grayscale array.

    Parameters
    ----------
    path
        A ``.jpeg``/``.jpg``/``.png`` file (read with Pillow) or a ``.dcm`` file (read with pydicom).

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(H, W)``.

    Raises
    ------
    DataError
        If the file is missing, truncated or not an image, naming the file.
    """
    return _load(Path(path), None)


def load_resized(path: Path, size: int) -> np.ndarray:
    """Decode ``path`` and resize it to ``size`` x ``size`` (``uint8``), decoding JPEGs at reduced scale when possible.

    Raises
    ------
    DataError
        If the file cannot be read, naming the file.
    """
    array = _load(Path(path), size)
    if array.shape == (size, size):
        return array
    # PIL's bilinear resize widens its kernel when shrinking, so large X-rays are antialiased.
    return np.array(Image.fromarray(array).resize((size, size), Image.Resampling.BILINEAR))


def probe_image(path: Path, data: bytes) -> tuple[int, int]:
    """Check that ``data`` (the bytes of ``path``) is a complete image and return its ``(width, height)``.

    PNGs are checked chunk by chunk (CRCs, no decoding); JPEGs are decoded at 1/8 scale, which still reads the
    whole stream and so catches truncation; DICOM files are parsed and the pixel data length is checked.

    Raises
    ------
    Exception
        Whatever the reader raises for a damaged file; callers treat any exception as "unreadable".
    """
    if path.suffix.lower() == DICOM_EXTENSION:
        return _probe_dicom(data)
    with Image.open(io.BytesIO(data)) as image:
        size = image.size
        if image.format == "JPEG":
            image.draft("L", (max(1, size[0] // 8), max(1, size[1] // 8)))
            image.load()
        else:
            image.verify()
    return size


def _load(path: Path, target: int | None) -> np.ndarray:
    try:
        if path.suffix.lower() == DICOM_EXTENSION:
            return _load_dicom(path)
        with Image.open(path) as image:
            if target is not None and image.format == "JPEG":
                # JPEG can decode at 1/2, 1/4, 1/8 scale for almost nothing; draft keeps the size >= target.
                image.draft("L", (target, target))
            return _pil_to_uint8(image)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"Image {path} does not exist any more: check the data folder and inspect it again.") from None
    except Exception as exc:  # PIL and pydicom raise many unrelated types for damaged files
        raise DataError(f"Image {path} could not be read ({exc}): replace or remove the file.") from exc


def _pil_to_uint8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit and float images: convert("L") would clip above 255, so scale the real range instead.
        return _to_uint8(np.asarray(image, dtype=np.float64))
    return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def _load_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    dataset = pydicom.dcmread(path, force=True)
    if "PixelData" not in dataset:
        raise DataError(f"DICOM file {path} holds no image (no PixelData): remove it from the dataset.")
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # missing codec plugins raise various types
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise DataError(
            f"DICOM file {path} could not be decoded (transfer syntax {syntax}: {exc}); "
            "install pylibjpeg with its plugins for compressed DICOM, or convert the file."
        ) from exc
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]  # a chest X-ray is one frame; take the first of a multi-frame file
    if pixels.ndim == 3:  # colour DICOM (RGB after pydicom's conversion): average to grayscale
        return _to_uint8(pixels.astype(np.float64).mean(axis=-1))
    # Order matters: stored values -> modality values (Rescale) -> display values (window / VOI LUT).
    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    if "VOILUTSequence" in dataset or "WindowCenter" in dataset:
        values = np.asarray(apply_voi_lut(values, dataset, prefer_lut=True), dtype=np.float64)
    scaled = _to_uint8(values)
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        scaled = 255 - scaled  # MONOCHROME1 shows low values as white
    return scaled


def _to_uint8(values: np.ndarray) -> np.ndarray:
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _probe_dicom(data: bytes) -> tuple[int, int]:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    if "PixelData" not in dataset or "Rows" not in dataset or "Columns" not in dataset:
        raise ValueError("no image data (PixelData, Rows or Columns missing)")
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    syntax = str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", ""))
    if syntax in _UNCOMPRESSED_SYNTAXES or not syntax:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        samples = int(dataset.get("SamplesPerPixel", 1))
        bits = int(dataset.get("BitsAllocated", 16))
        expected = rows * columns * samples * frames * bits // 8
        if len(dataset.PixelData) < expected:
            raise ValueError(f"pixel data is truncated ({len(dataset.PixelData)} of {expected} bytes)")
    return columns, rows
