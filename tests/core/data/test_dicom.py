"""Decoding images: DICOM modality LUT, VOI window and MONOCHROME1 order, 16-bit PNG, damaged files.

Every transfer syntax, photometric interpretation and failure kind has its own file in test_dicom_syntaxes.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import DataSource, inspect_dataset, load_image
from core.data.images import load_resized
from core.errors import DataError
from tests.core.data_helpers import write_csv, write_dicom, write_image

# Stored values 0..1000; with slope 2 / intercept -1000 they become -1000..1000.
STORED = np.array([[0, 400, 450, 500], [550, 600, 1000, 1000]], dtype=np.uint16)


def test_modality_lut_comes_before_the_window(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", STORED, slope=2.0, intercept=-1000.0, center=0.0, width=200.0)
    image = load_image(path)
    assert image.dtype == np.uint8 and image.shape == (2, 4)
    # Modality values -1000, -200 lie below the window (-100..100): black. 400 -> -200 would be white had the
    # window been applied to stored values. 500 -> 0 is mid grey; 600 -> 200 and above are white.
    assert image[0, 0] == 0 and image[0, 1] == 0
    assert image[0, 3] == pytest.approx(128, abs=2)
    assert image[0, 2] < image[0, 3] < image[1, 0]
    assert image[1, 1] == 255 and image[1, 2] == 255


def test_monochrome1_is_inverted_after_the_window(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "m1.dcm",
        STORED,
        photometric="MONOCHROME1",
        slope=2.0,
        intercept=-1000.0,
        center=0.0,
        width=200.0,
        explicit=False,
    )
    image = load_image(path)
    assert image[0, 0] == 255 and image[0, 1] == 255
    assert image[1, 1] == 0 and image[0, 3] == pytest.approx(127, abs=2)


def test_dicom_without_window_is_min_max_scaled(tmp_path: Path) -> None:
    stored = np.array([[100, 200], [300, 4100]], dtype=np.uint16)
    image = load_image(write_dicom(tmp_path / "plain.dcm", stored))
    assert image.tolist() == [[0, 6], [13, 255]]


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)).save(path)
    assert load_image(path).tolist() == [[0, 64], [128, 255]]


def test_png_and_jpeg_load_as_grayscale_and_resize(tmp_path: Path) -> None:
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(rgb)
    image = load_image(rgb)
    assert image.shape == (30, 40) and image.dtype == np.uint8 and int(image[0, 0]) == 76
    jpeg = write_image(tmp_path / "x.jpeg", size=64)
    small = load_resized(jpeg, 16)
    assert small.shape == (16, 16) and small.flags.writeable


def test_unreadable_files_raise_data_error_naming_them(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(DataError, match=r"bad\.png"):
        load_image(bad)
    with pytest.raises(DataError, match=r"gone\.dcm"):
        load_image(tmp_path / "gone.dcm")


def test_rsna_style_manifest_with_dicom_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = [f"patient-{i}" for i in range(8)]
    for pid in ids:
        write_dicom(tmp_path / "dcm" / f"{pid}.dcm", rng.integers(0, 4096, size=(16, 16)))
    manifest = write_csv(
        tmp_path / "labels.csv",
        ["patientId", "x", "Target"],
        [[pid, 0, i % 2] for i, pid in enumerate(ids)] + [[ids[1], 5, 1]],
    )
    source = DataSource(manifest, image_column="patientId", label_column="Target", image_root=tmp_path / "dcm")
    prepared = inspect_dataset(source, val_fraction=0.25, test_fraction=0.25)
    assert prepared.summary.ok, prepared.summary.format()
    assert prepared.summary.class_counts == {"NORMAL": 4, "PNEUMONIA": 4}
    assert prepared.summary.image_sizes["max"] == (16, 16)
    assert load_image(prepared.train[0].path).shape == (16, 16)
