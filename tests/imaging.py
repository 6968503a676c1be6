"""Tiny synthetic X-ray-like images for tests: pneumonia images carry a bright blob the model can learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def xray(rng: np.random.Generator, pneumonia: bool, size: int = 32) -> np.ndarray:
    """One grayscale image; the positive class has a bright patch in a random lung-ish spot."""
    image = rng.normal(90, 12, (size, size))
    if pneumonia:
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        yy, xx = np.mgrid[:size, :size]
        image += 110 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 8) ** 2))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_folder_dataset(root: Path, per_class: int = 24, size: int = 32, seed: int = 0, splits: bool = False) -> Path:
    """Write ``root/{NORMAL,PNEUMONIA}/*.png`` (or under train/val/test when ``splits``)."""
    rng = np.random.default_rng(seed)
    layout = (
        {"train": per_class, "val": max(4, per_class // 3), "test": max(4, per_class // 3)}
        if splits
        else {"": per_class}
    )
    for split, count in layout.items():
        for label, name in ((0, "NORMAL"), (1, "PNEUMONIA")):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(xray(rng, bool(label), size)).save(folder / f"{name.lower()}_{i:03d}.png")
    return root
