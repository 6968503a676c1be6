"""The demo dataset (deterministic, reused, atomic) and XrayDataset (shapes, normalisation, cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import DataSource, Sample, XrayDataset, build_transforms, ensure_demo_dataset, inspect_dataset
from core.data import demo as demo_module
from core.data.dataset import Unreadable
from core.errors import DataError
from tests.core.data_helpers import make_folder_dataset


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_dataset(tmp_path_factory.mktemp("demo") / "demo-v1")


def test_demo_layout_counts_and_look(demo_root: Path) -> None:
    summary = inspect_dataset(DataSource(demo_root)).summary
    assert summary.ok, summary.format()
    assert summary.split_counts == {
        "train": {"NORMAL": 160, "PNEUMONIA": 320},
        "val": {"NORMAL": 40, "PNEUMONIA": 80},
        "test": {"NORMAL": 40, "PNEUMONIA": 80},
    }
    assert summary.image_sizes["min"] == summary.image_sizes["max"] == (128, 128)
    assert (demo_root / demo_module.MARKER).read_text().strip() == str(demo_module.DEMO_VERSION)
    image = np.asarray(Image.open(next((demo_root / "val" / "NORMAL").iterdir())))
    # Lungs darker than the mediastinum between them; background darker than the body.
    assert image[60, 40:48].mean() < image[60, 60:68].mean()
    assert image[2, 2] < image[100, 30]


def test_pneumonia_images_are_brighter_in_the_lungs_on_average() -> None:
    def lung_mean(pneumonia: bool) -> float:
        values = [demo_module.render_chest(np.random.default_rng(i), pneumonia)[40:80, 30:50].mean() for i in range(30)]
        return float(np.mean(values))

    assert lung_mean(True) > lung_mean(False) + 2


def test_demo_is_deterministic_and_reused(demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each image has its own seed, so a smaller second dataset must repeat the first images byte for byte.
    monkeypatch.setattr(demo_module, "COUNTS", (("train", 1, 8), ("val", 1, 1), ("test", 1, 2)))
    names = [
        "train/NORMAL/train_normal_0000.png",
        "train/PNEUMONIA/train_pneumonia_0007.png",
        "test/PNEUMONIA/test_pneumonia_0001.png",
    ]
    other = ensure_demo_dataset(tmp_path / "again")
    for name in names:
        assert (demo_root / name).read_bytes() == (other / name).read_bytes()
    stamp = (other / names[0]).stat().st_mtime_ns
    assert ensure_demo_dataset(other) == other
    assert (other / names[0]).stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob(".again.tmp-*"))


def test_demo_interrupted_generation_is_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "demo"

    def broken(target: Path) -> None:
        (target / "train").mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr(demo_module, "_generate", broken)
    with pytest.raises(DataError, match="could not be written"):
        ensure_demo_dataset(root)
    assert not root.exists()
    monkeypatch.undo()
    monkeypatch.setattr(demo_module, "COUNTS", (("train", 2, 3), ("val", 1, 1), ("test", 1, 1)))
    assert ensure_demo_dataset(root) == root
    assert len(list(root.rglob("*.png"))) == 9


def test_demo_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a PneumoFL demo dataset"):
        ensure_demo_dataset(tmp_path)
    assert (tmp_path / "mine.txt").exists()


def test_transforms_shape_range_and_augmentation() -> None:
    image = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))
    evaluation = build_transforms(32, train=False)
    out = evaluation(image)
    assert type(out) is torch.Tensor and out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert out.min() >= -2.0 and out.max() <= 2.0 and out.min() < -1.9 and out.max() > 1.9
    assert torch.equal(evaluation(torch.from_numpy(image)), out)
    torch.manual_seed(0)
    augmented = build_transforms(32, train=True)(image)
    assert augmented.shape == (3, 32, 32) and not torch.equal(augmented, out)


def test_xray_dataset_items_and_cache(tmp_path: Path) -> None:
    make_folder_dataset(tmp_path, {"": (2, 3)}, ext=".jpg")
    samples = sorted(
        (Sample(p, int("PNEUMONIA" in str(p)), None) for p in tmp_path.rglob("*.jpg")), key=lambda s: str(s.path)
    )
    dataset = XrayDataset(samples, image_size=48, train=True)
    assert len(dataset) == 5 and dataset.labels == [0, 0, 1, 1, 1]
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.shape == (3, 48, 48) and image.dtype == torch.float32
        assert label.shape == () and label.dtype == torch.float32 and label.item() == samples[index].label
    for sample in samples:
        sample.path.unlink()  # a second epoch must not touch the files
    assert torch.stack([dataset[i][0] for i in range(len(dataset))]).shape == (5, 3, 48, 48)
    uncached = XrayDataset(samples, image_size=48, train=False, cache=False)
    gone = uncached[0]  # a file deleted after the check is skipped, with the sentence saying why
    assert isinstance(gone, Unreadable) and gone.path == str(samples[0].path)
    assert "normal_000.jpg does not exist any more" in gone.reason
