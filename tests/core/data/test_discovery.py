"""Finding images: folder layouts, CSV manifests, and the messages for bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import RunConfig
from core.data import DataSource, Sample, discover
from core.data import demo as demo_module
from tests.core.data_helpers import make_folder_dataset, write_csv, write_image


def _errors(problems: list) -> list[str]:
    return [p.message for p in problems if p.severity == "error"]


def _warnings(problems: list) -> list[str]:
    return [p.message for p in problems if p.severity == "warning"]


def test_split_folders_case_insensitive_classes_and_ignored_files(tmp_path: Path) -> None:
    make_folder_dataset(tmp_path, {"train": (2, 3), "test": (1, 1)}, class_names=("normal", "Pneumonia"))
    write_image(tmp_path / "val" / "NORMAL" / "upper.JPEG")
    (tmp_path / "train" / "normal" / "notes.txt").write_text("x")
    (tmp_path / "train" / "normal" / ".hidden.png").write_bytes(b"junk")
    (tmp_path / "train" / "COVID").mkdir()
    samples, problems = discover(DataSource(tmp_path))
    assert len(samples) == 8
    assert {s.split for s in samples} == {"train", "val", "test"}
    assert sum(s.label for s in samples if s.split == "train") == 3
    assert any(s.path.name == "upper.JPEG" and s.label == 0 for s in samples)
    assert not _errors(problems)
    warnings = " ".join(_warnings(problems))
    assert "COVID" in warnings and ".txt" in warnings


def test_flat_class_folders_have_no_split(tmp_path: Path) -> None:
    make_folder_dataset(tmp_path, {"": (2, 2)}, ext=".jpg")
    samples, problems = discover(DataSource(tmp_path, kind="folder"))
    assert [s.split for s in samples] == [None] * 4
    assert [s.label for s in samples] == [0, 0, 1, 1]
    assert problems == []


def test_layout_one_folder_down_is_found(tmp_path: Path) -> None:
    # The Kaggle archive unpacks as chest_xray/chest_xray/{train,val,test}.
    make_folder_dataset(tmp_path / "chest_xray", {"train": (1, 1)})
    samples, _ = discover(DataSource(tmp_path))
    assert len(samples) == 2


@pytest.mark.parametrize("make", ["missing", "no_layout", "empty_classes", "csv_is_dir"])
def test_folder_errors_name_the_path(tmp_path: Path, make: str) -> None:
    path, kind = tmp_path / "data", "auto"
    if make == "no_layout":
        write_image(path / "images" / "a.png")
        write_image(path / "other" / "b.png")
    elif make == "empty_classes":
        (path / "NORMAL").mkdir(parents=True)
        (path / "PNEUMONIA").mkdir()
    elif make == "csv_is_dir":
        path.mkdir()
        kind = "csv"
    samples, problems = discover(DataSource(path, kind=kind))
    errors = _errors(problems)
    assert samples == [] and len(errors) == 1
    assert str(path) in errors[0]
    expected = {
        "missing": "does not exist",
        "no_layout": "No NORMAL or PNEUMONIA folder",
        "empty_classes": "No images",
        "csv_is_dir": "is not a CSV file",
    }[make]
    assert expected in errors[0]


def test_csv_labels_splits_and_extensionless_ids(tmp_path: Path) -> None:
    images = tmp_path / "imgs"
    write_image(images / "a.png")
    write_image(images / "b.jpg")
    write_image(images / "sub" / "c.png")
    write_image(images / "1.2.840.5.png")  # a DICOM-UID-like id: its dots are not an extension
    manifest = write_csv(
        tmp_path / "meta" / "m.csv",
        ["pid", "Target", "split"],
        [
            ["a", "1", "train"],
            ["a", "1", "train"],  # repeated row (RSNA: one per box) is merged
            ["b.jpg", "Normal", "VAL"],
            ["sub/c.png", "negative", ""],
            ["1.2.840.5", "TRUE", "test"],
        ],
    )
    source = DataSource(manifest, image_column="pid", label_column="target", image_root=images)
    samples, problems = discover(source)
    assert problems == []
    by_name = {s.path.name: s for s in samples}
    assert by_name["a.png"] == Sample(images / "a.png", 1, "train")
    assert by_name["b.jpg"].label == 0 and by_name["b.jpg"].split == "val"
    assert by_name["c.png"].split is None
    assert by_name["1.2.840.5.png"].label == 1


def test_csv_missing_columns_lists_the_columns_it_has(tmp_path: Path) -> None:
    manifest = write_csv(tmp_path / "m.csv", ["file", "diagnosis"], [["a.png", "1"]])
    _, problems = discover(DataSource(manifest))
    errors = _errors(problems)
    assert len(errors) == 2
    assert "no column 'image'" in errors[0] and "file, diagnosis" in errors[0] and "csv_image_column" in errors[0]
    assert "no column 'label'" in errors[1] and "csv_label_column" in errors[1]


def test_csv_unknown_labels_name_value_and_rows(tmp_path: Path) -> None:
    for name in "abcd":
        write_image(tmp_path / f"{name}.png")
    manifest = write_csv(
        tmp_path / "m.csv", ["image", "label"], [["a.png", "maybe"], ["b.png", "1"], ["c.png", "maybe"], ["d.png", ""]]
    )
    samples, problems = discover(DataSource(manifest))
    assert [s.path.name for s in samples] == ["b.png"]
    (error,) = _errors(problems)
    assert "'label'" in error and "m.csv" in error
    assert "'maybe' (rows 2, 4)" in error and "'' (row 5)" in error


def test_csv_missing_images_conflicts_and_bad_splits(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    manifest = write_csv(
        tmp_path / "m.csv",
        ["image", "label", "split"],
        [
            ["a.png", 0, "train"],
            ["gone.png", 1, "train"],
            ["b.png", 0, "holdout"],
            ["b.png", 1, "train"],
            ["", 1, "train"],
        ],
    )
    samples, problems = discover(DataSource(manifest))
    assert samples == [Sample(tmp_path / "a.png", 0, "train")]
    warnings = "\n".join(_warnings(problems))
    assert "gone.png" in warnings and "were not found" in warnings
    assert "Image b.png is listed in m.csv with both labels (rows 4, 5)" in warnings
    assert "'holdout' (row 4)" in warnings
    assert "Column 'image' of m.csv is empty in row 6" in warnings


def test_csv_image_root_missing_and_empty_manifest(tmp_path: Path) -> None:
    manifest = write_csv(tmp_path / "m.csv", ["image", "label"], [])
    _, problems = discover(DataSource(manifest, image_root=tmp_path / "nowhere"))
    assert "nowhere" in _errors(problems)[0]
    _, problems = discover(DataSource(manifest))
    assert "m.csv lists no images" in _errors(problems)[0]
    (tmp_path / "blank.csv").write_text("")
    _, problems = discover(DataSource(tmp_path / "blank.csv"))
    assert "blank.csv is empty" in _errors(problems)[0]


def test_from_config_csv_and_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_module, "COUNTS", (("train", 1, 1), ("val", 1, 1), ("test", 1, 1)))
    config = RunConfig(
        data_path=str(tmp_path / "m.csv"),
        csv_image_column="patientId",
        csv_label_column="Target",
        csv_image_root=str(tmp_path / "dcm"),
    )
    source = DataSource.from_config(config)
    assert source == DataSource(tmp_path / "m.csv", "auto", "patientId", "Target", tmp_path / "dcm")
    assert source.resolved_kind() == "csv"
    demo = DataSource.from_config(RunConfig(demo=True), demo_root=tmp_path / "demo")
    assert demo.path == tmp_path / "demo" and demo.kind == "folder"
    assert (tmp_path / "demo" / "train" / "PNEUMONIA").is_dir()
