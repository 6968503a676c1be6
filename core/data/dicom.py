"""Decoding one DICOM file into display values, or one sentence saying why it is no chest radiograph.

pydicom decodes the pixel data with its plugins (GDCM, pylibjpeg with openjpeg and rle); every transfer syntax
they handle decodes here. The order of the grey-level steps matters: stored values -> modality values (Rescale
slope/intercept or Modality LUT) -> display values (window or VOI LUT) -> MONOCHROME1 inverted. Colour images
(RGB, YBR_*, PALETTE COLOR) become grey by luminance.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydicom.uid import UID

from core.data.pydicom_plugins import JPEG_EXTENDED, PLUGIN_LABEL, register_plugins
from core.errors import ImageProblem

if TYPE_CHECKING:
    from pydicom import Dataset

RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR"})
_GREY = frozenset({"MONOCHROME1", "MONOCHROME2"})
_COLOUR = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "PALETTE COLOR"})
# ITU-R BT.601 luma weights: what "grey" means for an RGB medical image.
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class DicomImage:
    """A decoded DICOM image: ``values`` are display values (float64, before scaling to 8 bits)."""

    values: np.ndarray
    modality: str
    transfer_syntax: str
    converted_to_grey: bool


def decode_dicom(name: str, data: bytes) -> DicomImage:
    """Decode the single frame of a DICOM file into display values.

    Parameters
    ----------
    name
        The file's path, for the sentences.
    data
        The file's bytes.

    Returns
    -------
    DicomImage
        Display values of shape ``(rows, columns)``, with what the summary counts.

    Raises
    ------
    ImageProblem
        ``no_pixel_data``, ``multi_frame``, ``invalid_header``, ``truncated`` or ``undecodable``, one sentence.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    register_plugins()
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ImageProblem("invalid_header", f"DICOM file {name} cannot be parsed ({exc}): replace the file.") from exc
    if data[128:132] != b"DICM" and "SOPClassUID" not in dataset and "PixelData" not in dataset:
        # force=True reads anything as a (nearly empty) dataset; without preamble or identity it is not DICOM.
        raise ImageProblem(
            "invalid_header", f"File {name} is not a DICOM file (no DICOM header found): replace or remove it."
        )
    syntax = _transfer_syntax(dataset)
    if "PixelData" not in dataset:
        what = _sop_class_name(dataset)
        raise ImageProblem(
            "no_pixel_data", f"DICOM file {name} holds no image ({what}, no pixel data): remove it from the dataset."
        )
    _check_header(name, dataset)
    frames = _int(dataset, "NumberOfFrames", 1)
    if frames > 1:
        raise ImageProblem(
            "multi_frame",
            f"DICOM file {name} holds {frames} frames ({_modality(dataset) or 'no modality'}); "
            "a chest radiograph is a single image: remove it from the dataset.",
        )
    if syntax and UID(syntax).is_transfer_syntax and not UID(syntax).is_encapsulated:
        _check_native_length(name, dataset)
    if syntax == JPEG_EXTENDED and _int(dataset, "BitsStored", 8) > 8:
        dataset.pixel_array_options(decoding_plugin=PLUGIN_LABEL)  # the only installed plugin that reads it
    try:
        pixels = dataset.pixel_array
    except Exception as exc:
        raise ImageProblem("undecodable", _decode_failure(name, syntax, exc)) from exc
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    converted = False
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, dataset)
    if pixels.ndim == 3:  # RGB (pydicom converts YBR_* to RGB while decoding)
        values = pixels.astype(np.float64) @ _LUMA
        converted = True
    else:
        values = _grey_display_values(dataset, pixels, photometric)
    return DicomImage(values=values, modality=_modality(dataset), transfer_syntax=syntax, converted_to_grey=converted)


_SHORT_NAMES = {
    "1.2.840.10008.1.2": "uncompressed implicit VR",
    "1.2.840.10008.1.2.1": "uncompressed",
    "1.2.840.10008.1.2.2": "uncompressed big endian",
    "1.2.840.10008.1.2.1.99": "deflated",
    "1.2.840.10008.1.2.5": "RLE",
    "1.2.840.10008.1.2.4.50": "JPEG baseline",
    "1.2.840.10008.1.2.4.51": "JPEG extended",
    "1.2.840.10008.1.2.4.57": "JPEG lossless",
    "1.2.840.10008.1.2.4.70": "JPEG lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.201": "HTJ2K lossless",
    "1.2.840.10008.1.2.4.202": "HTJ2K lossless RPCL",
    "1.2.840.10008.1.2.4.203": "HTJ2K",
}


def syntax_name(uid: str) -> str:
    """A transfer syntax's short readable name ("JPEG 2000 lossless"), pydicom's name, or the UID itself."""
    if uid in _SHORT_NAMES:
        return _SHORT_NAMES[uid]
    name = UID(uid).name if uid else ""
    return name if name and name != uid else (uid or "no transfer syntax")


def _grey_display_values(dataset: Dataset, pixels: np.ndarray, photometric: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    if "VOILUTSequence" in dataset or "WindowCenter" in dataset:
        values = np.asarray(apply_voi_lut(values, dataset, prefer_lut=True), dtype=np.float64)
    if photometric == "MONOCHROME1":  # low values are white: flip so that high means bright
        values = values.max() + values.min() - values
    return values


def _check_header(name: str, dataset: Dataset) -> None:
    """Refuse header values that make the pixel data meaningless, naming the field."""

    def bad(field: str, value: object, expected: str) -> ImageProblem:
        return ImageProblem(
            "invalid_header",
            f"DICOM file {name} has an invalid header: {field} is {value!r}, expected {expected}; "
            "export the image again or remove it.",
        )

    for field in ("Rows", "Columns"):
        if _int(dataset, field, 0) <= 0:
            raise bad(field, dataset.get(field), "a positive number")
    allocated = _int(dataset, "BitsAllocated", 0)
    if allocated not in (1, 8, 16, 32):
        raise bad("BitsAllocated", dataset.get("BitsAllocated"), "1, 8, 16 or 32")
    stored = _int(dataset, "BitsStored", allocated)
    if not 0 < stored <= allocated:
        raise bad("BitsStored", stored, f"between 1 and BitsAllocated ({allocated})")
    if _int(dataset, "SamplesPerPixel", 1) not in (1, 3):
        raise bad("SamplesPerPixel", dataset.get("SamplesPerPixel"), "1 or 3")
    if _int(dataset, "PixelRepresentation", 0) not in (0, 1):
        raise bad("PixelRepresentation", dataset.get("PixelRepresentation"), "0 or 1")
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    if photometric not in _GREY | _COLOUR:
        raise bad("PhotometricInterpretation", photometric, "MONOCHROME1/2, RGB, YBR_* or PALETTE COLOR")


def _check_native_length(name: str, dataset: Dataset) -> None:
    """Uncompressed pixel data shorter than its header says is a truncated file (pydicom would only warn)."""
    rows, columns = _int(dataset, "Rows", 0), _int(dataset, "Columns", 0)
    samples, bits = _int(dataset, "SamplesPerPixel", 1), _int(dataset, "BitsAllocated", 16)
    expected = (rows * columns * samples * bits + 7) // 8
    actual = len(dataset.PixelData)
    if actual < expected:
        raise ImageProblem(
            "truncated",
            f"DICOM file {name} is truncated: its pixel data holds {actual} of {expected} bytes; "
            "copy the file again from the archive.",
        )


def _decode_failure(name: str, syntax: str, exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "is not supported" in text or "missing dependencies" in text:
        return (
            f"DICOM file {name} uses a transfer syntax that no installed decoder reads ({syntax_name(syntax)}): "
            "export it again as uncompressed DICOM, JPEG, JPEG-LS, JPEG 2000 or RLE."
        )
    return (
        f"DICOM file {name} could not be decoded ({syntax_name(syntax)}: {text[:300]}); "
        "the file is damaged or truncated: copy it again from the archive."
    )


def _transfer_syntax(dataset: Dataset) -> str:
    meta = getattr(dataset, "file_meta", None)
    return str(getattr(meta, "TransferSyntaxUID", "") or "")


def _sop_class_name(dataset: Dataset) -> str:
    uid = dataset.get("SOPClassUID")
    if not uid:
        return "no SOP class"
    return getattr(uid, "name", None) or str(uid)


def _modality(dataset: Dataset) -> str:
    return str(dataset.get("Modality", "") or "").strip().upper()


def _int(dataset: Dataset, field: str, default: int) -> int:
    value = dataset.get(field, default)
    try:
        return int(value if value not in (None, "") else default)
    except (TypeError, ValueError):
        return -1
