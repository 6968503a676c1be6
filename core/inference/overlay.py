"""A Grad-CAM heatmap drawn over its image, as the app shows it and as ``predict --cam`` writes it."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.images import decode_image

DISPLAY_SIZE = 512


@cache
def colour_table() -> np.ndarray:
    """``(256, 3)`` uint8 RGB of the 'inferno' colour map (perceptually uniform, readable in greyscale)."""
    from matplotlib import colormaps  # the colour map only: no plotting backend is loaded

    return (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def blend(grey: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """RGB ``uint8`` of ``grey`` (H, W) with ``heatmap`` (any size, values in [0, 1]) blended on top.

    Weak evidence stays see-through: each pixel's opacity scales with its heat, so the anatomy under a
    cold region is not tinted.
    """
    height, width = grey.shape
    heat = np.asarray(Image.fromarray(heatmap.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)
    colours = colour_table()[(heat * 255).astype(np.uint8)].astype(np.float32)
    alpha = (opacity * heat)[..., None]
    base = np.repeat(grey[..., None].astype(np.float32), 3, axis=2)
    return (base * (1 - alpha) + colours * alpha).round().astype(np.uint8)


def overlay_png(image_path: Path, heatmap: np.ndarray, target: Path, size: int = DISPLAY_SIZE) -> None:
    """Write the image at ``size`` px with its heatmap blended on top, as PNG."""
    grey = decode_image(image_path, size=size).pixels
    Image.fromarray(blend(grey, heatmap)).save(target)
