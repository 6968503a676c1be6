"""The built-in demo dataset: synthetic chest-X-ray-like PNGs, generated once and reused.

The images are not medical data. NORMAL images show a body, two dark lung fields, ribs, spine and heart;
PNEUMONIA images add 1-3 soft brighter opacities inside the lungs. Vessel-like small blobs appear in both
classes so that "any bright spot" is not the answer.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import platformdirs
from PIL import Image, ImageFilter

from core.errors import DataError

DEMO_VERSION = 1
MARKER = ".pneumofl-demo"
SIZE = 128
# (split, NORMAL count, PNEUMONIA count): about 1:2, like the public Kaggle set.
COUNTS = (("train", 160, 320), ("val", 40, 80), ("test", 40, 80))
_SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}
_STALE_TEMP_S = 600

_AXIS = np.arange(SIZE, dtype=np.float32)
_X, _Y = np.meshgrid(_AXIS, _AXIS)


def default_demo_root() -> Path:
    """Return the folder the demo dataset lives in by default (in the user cache)."""
    return Path(platformdirs.user_cache_dir("pneumofl")) / f"demo-v{DEMO_VERSION}"


def ensure_demo_dataset(root: Path | None = None) -> Path:
    """Return the demo dataset folder, generating it first if it is missing or unfinished.

    The images are written to a temporary sibling folder which is renamed to ``root`` at the end, with a
    marker file holding the generator version; an interrupted generation leaves no ``root`` and is redone.

    Parameters
    ----------
    root
        Target folder (default: :func:`default_demo_root`), laid out ``root/{train,val,test}/{NORMAL,PNEUMONIA}``.

    Raises
    ------
    DataError
        If ``root`` exists and is not a demo dataset, or cannot be written.
    """
    root = Path(root) if root is not None else default_demo_root()
    if _is_current(root):
        return root
    if root.exists():
        if (root / MARKER).exists():
            shutil.rmtree(root)  # ours, from another generator version
        elif root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        else:
            raise DataError(f"Folder {root} exists and is not a PneumoFL demo dataset: choose another folder.")
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(root)
        temp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        _generate(temp)
        (temp / MARKER).write_text(f"{DEMO_VERSION}\n", encoding="utf-8")
        try:
            temp.rename(root)
        except OSError:
            shutil.rmtree(temp, ignore_errors=True)
            if not _is_current(root):  # another process finished first, which is fine; anything else is not
                raise
    except OSError as exc:
        raise DataError(
            f"The demo dataset could not be written to {root} ({exc}): free disk space or choose another folder."
        ) from exc
    return root


def _is_current(root: Path) -> bool:
    try:
        return (root / MARKER).read_text(encoding="utf-8").strip() == str(DEMO_VERSION)
    except OSError:
        return False


def _remove_stale_temps(root: Path) -> None:
    for temp in root.parent.glob(f".{root.name}.tmp-*"):
        try:
            if time.time() - temp.stat().st_mtime > _STALE_TEMP_S:
                shutil.rmtree(temp, ignore_errors=True)
        except OSError:
            continue


def _generate(target: Path) -> None:
    for split, n_normal, n_pneumonia in COUNTS:
        for label, (name, count) in enumerate((("NORMAL", n_normal), ("PNEUMONIA", n_pneumonia))):
            folder = target / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                # One seed per image: regenerating gives identical bytes, whatever order images are made in.
                rng = np.random.default_rng([DEMO_VERSION, _SPLIT_SEEDS[split], label, index])
                image = Image.fromarray(render_chest(rng, pneumonia=bool(label)))
                image.save(folder / f"{split}_{name.lower()}_{index:04d}.png", compress_level=1)


def _ellipse(cx: float, cy: float, ax: float, ay: float, x: np.ndarray, y: np.ndarray, edge: float) -> np.ndarray:
    """Soft-edged filled ellipse (1 inside, 0 outside) with a transition about ``edge`` pixels wide."""
    r = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return 1.0 / (1.0 + np.exp((r - 1.0) * min(ax, ay) / edge))


def _blob(cx: float, cy: float, sigma: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * sigma**2))


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    # A Python float keeps the float32 grids in float32 (a NumPy float64 scalar would promote them).
    return float(rng.uniform(low, high))


def render_chest(rng: np.random.Generator, pneumonia: bool) -> np.ndarray:
    """Draw one synthetic chest X-ray as a ``uint8`` ``SIZE`` x ``SIZE`` array."""
    return render_chest_with_opacity(rng, pneumonia)[0]


def opacity_mask(path: Path) -> np.ndarray | None:
    """Where the generator put the opacities of demo image ``path``: a ``SIZE`` x ``SIZE`` bool mask.

    ``None`` for a NORMAL image or a file name the generator does not write. A pixel is inside an opacity
    when it lies in the lungs within two standard deviations of an opacity's centre.
    """
    parts = Path(path).stem.split("_")
    if len(parts) != 3 or parts[0] not in _SPLIT_SEEDS or parts[1] != "pneumonia" or not parts[2].isdigit():
        return None
    rng = np.random.default_rng([DEMO_VERSION, _SPLIT_SEEDS[parts[0]], 1, int(parts[2])])
    return render_chest_with_opacity(rng, pneumonia=True)[1]


def render_chest_with_opacity(rng: np.random.Generator, pneumonia: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render_chest`, and the mask of its opacities (see :func:`opacity_mask`)."""
    # Per-image pose: shift, scale and a mild tilt, applied by moving the sampling grid.
    scale = _u(rng, 0.9, 1.1)
    dx, dy = _u(rng, -5, 5), _u(rng, -5, 5)
    angle = _u(rng, -0.06, 0.06)
    cx0, cy0 = SIZE / 2, SIZE / 2
    xr, yr = (_X - cx0 - dx) / scale, (_Y - cy0 - dy) / scale
    x = math.cos(angle) * xr - math.sin(angle) * yr + cx0
    y = math.sin(angle) * xr + math.cos(angle) * yr + cy0

    body = _ellipse(64, 72, 60, 74, x, y, 3.0)
    image = 0.06 + 0.52 * body
    lung_w, lung_h = _u(rng, 16, 20), _u(rng, 30, 36)
    lungs = []
    for side in (-1, 1):
        lung = _ellipse(64 + side * 23, 60, lung_w, lung_h, x, y, 2.5)
        lungs.append(lung)
        image -= 0.34 * lung
    lung_mask = np.maximum(lungs[0], lungs[1])
    # Ribs: faint bright arcs that droop towards the sides, visible mostly over the dark lungs.
    for k in range(7):
        y0 = 30 + k * 9.5 + float(rng.normal(0, 0.8))
        arc = y0 + 0.012 * (x - 64) ** 2
        rib = np.exp(-((y - arc) ** 2) / 2.0) * (np.abs(x - 64) > 4)
        image += 0.07 * rib * (0.4 + 0.6 * lung_mask)
    image += 0.22 * _ellipse(64, 70, 7, 62, x, y, 1.5)  # spine and mediastinum
    image += 0.2 * _ellipse(70 + _u(rng, -2, 2), 82, _u(rng, 14, 18), _u(rng, 12, 15), x, y, 2.0)  # heart
    for _ in range(rng.integers(3, 7)):  # vessel-like small blobs near the hila, in both classes
        side = int(rng.choice((-1, 1)))
        image += _u(rng, 0.04, 0.1) * _blob(64 + side * _u(rng, 10, 20), _u(rng, 50, 75), _u(rng, 1.0, 2.2), x, y)
    opacity = np.zeros((SIZE, SIZE), dtype=bool)
    if pneumonia:
        for _ in range(rng.integers(1, 4)):
            side = int(rng.choice((-1, 1)))
            r, theta = math.sqrt(_u(rng, 0, 0.55)), _u(rng, 0, 2 * math.pi)
            ox, oy = 64 + side * 23 + r * lung_w * math.cos(theta), 60 + r * lung_h * math.sin(theta)
            sigma = _u(rng, 4.0, 9.0)
            texture = 0.7 + 0.3 * rng.random((SIZE, SIZE), dtype=np.float32)
            blob = _blob(ox, oy, sigma, x, y)
            image += _u(rng, 0.12, 0.28) * blob * texture * lung_mask
            opacity |= (blob > math.exp(-2.0)) & (lung_mask > 0.5)
    image = image * _u(rng, 0.85, 1.15) + _u(rng, -0.06, 0.06)  # exposure
    image += 0.03 * rng.standard_normal(image.shape, dtype=np.float32)
    pixels = np.clip(image * 255, 0, 255).astype(np.uint8)
    blurred = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius=0.8))
    return np.asarray(blurred), opacity
