"""Reading chest X-ray images (JPEG, PNG, DICOM) as 8-bit grayscale arrays: one code path for check and training.

The dataset check calls :func:`decode_image` on bytes it has already read (and hashed); training calls
:func:`load_resized`, which reads the file and goes through the same function. What the check accepts,
training can read.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import ImageProblem

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".dcm")
# The model sees (x / 255 - NORMALISE_MEAN) / NORMALISE_STD: values in [-2, 2] (core.data.dataset.build_transforms).
NORMALISE_MEAN = 0.5
NORMALISE_STD = 0.25
DICOM_EXTENSION = ".dcm"


@dataclass(frozen=True)
class DecodedImage:
    """An image as training sees it, and what the dataset check reports about it.

    ``pixels`` is ``uint8`` ``(H, W)``, resized to the requested size; ``width``/``height`` are the file's own.
    ``file_type`` is "PNG", "JPEG" or "DICOM <transfer syntax>"; ``modality`` is empty outside DICOM.
    """

    pixels: np.ndarray
    width: int
    height: int
    file_type: str
    converted_to_grey: bool = False
    modality: str = ""


def is_image_file(path: Path) -> bool:
    """Return True for a visible file with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def load_image(path: Path) -> np.ndarray:
    """Decode an image file to an 8-bit grayscale array at its own size.

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
    core.errors.ImageProblem
        If the file is missing, damaged or no usable image, naming the file.
    """
    return decode_image(Path(path)).pixels


def load_resized(path: Path, size: int) -> np.ndarray:
    """Decode ``path`` and resize it to ``size`` x ``size`` (``uint8``), as training feeds it to the model.

    Raises
    ------
    core.errors.ImageProblem
        If the file cannot be read, naming the file.
    """
    return decode_image(Path(path), size=size).pixels


def decode_image(path: Path, data: bytes | None = None, size: int | None = None) -> DecodedImage:
    """Decode one image file, from its bytes when the caller already has them.

    Parameters
    ----------
    path
        The file (its suffix picks the reader; it is read when ``data`` is None).
    data
        The file's bytes.
    size
        Resize to ``size`` x ``size`` (JPEGs are decoded at reduced scale first when that is enough).

    Returns
    -------
    DecodedImage

    Raises
    ------
    core.errors.ImageProblem
        One sentence naming the file and saying what is wrong (see its ``kind``).
    """
    if data is None:
        data = read_image_bytes(path)
    if path.suffix.lower() == DICOM_EXTENSION:
        decoded = _decode_dicom(path, data)
    else:
        decoded = _decode_pil(path, data, size)
    if size is not None and decoded.pixels.shape != (size, size):
        # PIL's bilinear resize widens its kernel when shrinking, so large X-rays are antialiased.
        resized = np.array(Image.fromarray(decoded.pixels).resize((size, size), Image.Resampling.BILINEAR))
        decoded = dataclasses.replace(decoded, pixels=resized)
    return decoded


def read_image_bytes(path: Path) -> bytes:
    """The bytes of an image file.

    Raises
    ------
    core.errors.ImageProblem
        ``missing`` or ``unreadable``, naming the file.
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageProblem(
            "missing", f"Image {path} does not exist any more: check the data folder and check it again."
        ) from None
    except OSError as exc:
        raise ImageProblem("unreadable", f"Image {path} cannot be read ({exc.strerror or exc}).") from None


def _decode_pil(path: Path, data: bytes, size: int | None) -> DecodedImage:
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            file_type = image.format or path.suffix.lstrip(".").upper()
            colour = image.mode not in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F", "P")
            if size is not None and image.format == "JPEG":
                # JPEG can decode at 1/2, 1/4, 1/8 scale for almost nothing; draft keeps the size >= size.
                image.draft("L", (size, size))
            pixels = _pil_to_uint8(image)
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageProblem(
            "unreadable", f"Image {path} could not be read ({reason}): replace or remove the file."
        ) from exc
    return DecodedImage(pixels, width, height, file_type, converted_to_grey=colour)


def _pil_to_uint8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit and float images: convert("L") would clip above 255, so scale the real range instead.
        return to_uint8(np.asarray(image, dtype=np.float64))
    return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def _decode_dicom(path: Path, data: bytes) -> DecodedImage:
    from core.data.dicom import decode_dicom, syntax_name

    image = decode_dicom(str(path), data)
    height, width = image.values.shape
    return DecodedImage(
        to_uint8(image.values),
        width,
        height,
        f"DICOM {syntax_name(image.transfer_syntax)}",
        image.converted_to_grey,
        image.modality or "none",
    )


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale ``values`` linearly so their minimum is 0 and maximum 255 (a flat image becomes black)."""
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)
