"""Checking datasets: counts, splits, damaged images, duplicates and leakage, and refusing bad data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from core.data import DataSource, Sample, inspect_dataset, inspect_trainable, stratified_split
from core.errors import DataError
from tests.core.data_helpers import make_folder_dataset, write_csv, write_image


def _messages(prepared, severity: str) -> str:
    return "\n".join(p.message for p in prepared.summary.problems if p.severity == severity)


def _samples(n_normal: int, n_pneumonia: int) -> list[Sample]:
    return [
        Sample(Path(f"/x/{label}_{i:03d}.png"), label, None)
        for label, n in ((0, n_normal), (1, n_pneumonia))
        for i in range(n)
    ]


def test_stratified_split_is_deterministic_and_stratified() -> None:
    samples = _samples(40, 80)
    train, val, test = stratified_split(samples, 0.15, 0.15, seed=7)
    again = stratified_split(list(reversed(samples)), 0.15, 0.15, seed=7)
    assert (train, val, test) == again
    assert [sum(s.label == c for s in val) for c in (0, 1)] == [6, 12]
    assert [sum(s.label == c for s in test) for c in (0, 1)] == [6, 12]
    assert len(train) == 84 and {s.split for s in train} == {"train"}
    assert sorted(s.path for s in train + val + test) == sorted(s.path for s in samples)
    assert stratified_split(samples, 0.15, 0.15, seed=8)[1] != val


@pytest.mark.parametrize("n", [3, 4, 7])
def test_stratified_split_gives_every_split_each_class(n: int) -> None:
    train, val, test = stratified_split(_samples(n, n), 0.1, 0.1, seed=0)
    for part in (train, val, test):
        assert {s.label for s in part} == {0, 1}


def test_stratified_split_zero_fractions_keep_everything_in_train() -> None:
    train, val, test = stratified_split(_samples(5, 5), 0.0, 0.0, seed=0)
    assert len(train) == 10 and val == [] and test == []


def test_folder_with_splits_keeps_them_and_fills_missing_test(tmp_path: Path) -> None:
    make_folder_dataset(tmp_path, {"train": (20, 40), "val": (10, 12)})
    prepared = inspect_dataset(DataSource(tmp_path), seed=1)
    summary = prepared.summary
    assert summary.ok, summary.format()
    assert summary.split_counts["val"] == {"NORMAL": 10, "PNEUMONIA": 12}
    assert summary.split_counts["test"] == {"NORMAL": 3, "PNEUMONIA": 6}
    assert summary.class_counts == {"NORMAL": 30, "PNEUMONIA": 52}
    assert summary.imbalance_ratio == pytest.approx(52 / 30)
    assert summary.image_sizes == {"min": (32, 32), "median": (32, 32), "max": (32, 32)}
    assert {s.split for s in prepared.test} == {"test"}


def test_tiny_val_folder_is_merged_and_redrawn(tmp_path: Path) -> None:
    # Like the Kaggle set: a val folder of 8 + 8 images.
    make_folder_dataset(tmp_path, {"train": (40, 80), "val": (8, 8), "test": (10, 10)})
    prepared = inspect_dataset(DataSource(tmp_path), val_fraction=0.2)
    assert "merged into train" in _messages(prepared, "warning")
    assert prepared.summary.split_counts["val"] == {"NORMAL": 10, "PNEUMONIA": 18}
    assert len(prepared.train) + len(prepared.val) == 136
    assert prepared.summary.split_counts["test"] == {"NORMAL": 10, "PNEUMONIA": 10}


def test_flat_layout_is_split_and_summary_reports(tmp_path: Path) -> None:
    make_folder_dataset(tmp_path, {"": (10, 20)})
    prepared = inspect_trainable(DataSource(tmp_path), val_fraction=0.2, test_fraction=0.0)
    assert prepared.test == []
    assert prepared.summary.split_counts["val"] == {"NORMAL": 2, "PNEUMONIA": 4}
    text = prepared.summary.format()
    assert "NORMAL 10, PNEUMONIA 20" in text and "2.00:1" in text and "No problems found." in text
    data = prepared.summary.to_dict()
    assert json.loads(json.dumps(data)) == data and data["ok"] is True


def test_corrupt_images_are_skipped_with_warning_or_error(tmp_path: Path) -> None:
    make_folder_dataset(tmp_path, {"": (20, 20)})
    good = (tmp_path / "NORMAL" / "normal_000.png").read_bytes()
    (tmp_path / "NORMAL" / "cut.png").write_bytes(good[: len(good) // 2])
    write_image(tmp_path / "PNEUMONIA" / "whole.jpg", size=64)
    jpeg = (tmp_path / "PNEUMONIA" / "whole.jpg").read_bytes()
    (tmp_path / "PNEUMONIA" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "PNEUMONIA" / "text.dcm").write_bytes(b"not a dicom at all")
    prepared = inspect_dataset(DataSource(tmp_path), max_bad_fraction=0.1)
    assert prepared.summary.skipped == 3
    assert prepared.summary.ok
    per_file = [p for p in prepared.summary.problems if p.paths and p.kind in ("unreadable", "invalid_header")]
    assert sorted(Path(p.paths[0]).name for p in per_file) == ["cut.jpg", "cut.png", "text.dcm"]
    for problem in per_file:  # one sentence each, naming its file
        assert problem.severity == "warning" and problem.paths[0] in problem.message
    assert all("cut" not in s.path.name for s in prepared.train + prepared.val + prepared.test)
    strict = inspect_dataset(DataSource(tmp_path), max_bad_fraction=0.05)
    assert "3 of 44 images" in _messages(strict, "error") and "max_bad_fraction" in _messages(strict, "error")
    with pytest.raises(DataError, match="3 of 44 images"):
        inspect_trainable(DataSource(tmp_path), max_bad_fraction=0.05)


def test_check_images_off_skips_probing(tmp_path: Path) -> None:
    make_folder_dataset(tmp_path, {"": (5, 5)})
    (tmp_path / "NORMAL" / "bad.png").write_bytes(b"nope")
    prepared = inspect_dataset(DataSource(tmp_path), check_images=False)
    assert prepared.summary.skipped == 0 and prepared.summary.image_sizes == {}
    assert len(prepared.train + prepared.val + prepared.test) == 11


def test_missing_csv_images_count_against_max_bad_fraction(tmp_path: Path) -> None:
    rows = [[f"{i}.png", i % 2] for i in range(10)]
    for name, _ in rows[:8]:
        write_image(tmp_path / name)
    manifest = write_csv(tmp_path / "m.csv", ["image", "label"], rows)
    prepared = inspect_dataset(DataSource(manifest))
    assert "8.png" in _messages(prepared, "warning") and "9.png" in _messages(prepared, "warning")
    assert "2 of 10 images" in _messages(prepared, "error")


def test_single_class_is_refused(tmp_path: Path) -> None:
    make_folder_dataset(tmp_path, {"": (0, 6)})
    with pytest.raises(DataError) as info:
        inspect_trainable(DataSource(tmp_path))
    message = str(info.value)
    assert "Only PNEUMONIA images were found" in message and "add NORMAL images" in message
    assert "cannot be used for training" in message and "Splits:" in message


def test_too_few_images_leave_an_empty_split(tmp_path: Path) -> None:
    make_folder_dataset(tmp_path, {"": (1, 2)})
    prepared = inspect_dataset(DataSource(tmp_path))
    errors = _messages(prepared, "error")
    assert "The val split is empty" in errors and "The test split is empty" in errors
    assert "The val split has no NORMAL images" not in errors


def test_no_images_and_missing_path_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        inspect_trainable(DataSource(tmp_path / "nothing"))
    make_folder_dataset(tmp_path, {"": (2, 2)})
    for file in (tmp_path / "NORMAL").iterdir():
        file.write_bytes(b"x")
    for file in (tmp_path / "PNEUMONIA").iterdir():
        file.write_bytes(b"y")
    prepared = inspect_dataset(DataSource(tmp_path))
    assert "No usable images" in _messages(prepared, "error")
    assert math.isinf(prepared.summary.imbalance_ratio) and prepared.summary.to_dict()["imbalance_ratio"] is None


def test_duplicates_and_leakage_are_warned(tmp_path: Path) -> None:
    make_folder_dataset(tmp_path, {"train": (20, 20), "test": (5, 5)})
    shutil.copy(tmp_path / "train" / "NORMAL" / "normal_000.png", tmp_path / "train" / "NORMAL" / "copy.png")
    shutil.copy(tmp_path / "train" / "PNEUMONIA" / "pneumonia_001.png", tmp_path / "test" / "PNEUMONIA" / "leak.png")
    prepared = inspect_dataset(DataSource(tmp_path), val_fraction=0.0)
    assert prepared.summary.ok
    warnings = _messages(prepared, "warning")
    assert "2 pair(s) of identical images" in warnings
    assert "copy.png" in warnings and "leak.png" in warnings
    assert "1 image(s) in test are identical to images in train" in warnings
    assert "There is no val split" in warnings
