import pytest

from core.config import RunConfig
from tests.imaging import write_folder_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """48 tiny PNGs in NORMAL/PNEUMONIA folders, shared read-only by the training tests."""
    return write_folder_dataset(tmp_path_factory.mktemp("tiny-xrays"), per_class=24, size=32)


@pytest.fixture
def tiny_config(tiny_dataset):
    """A run that trains in a couple of seconds on two CPU cores."""
    return tiny_run_config(tiny_dataset)


def tiny_run_config(data_path, **overrides) -> RunConfig:
    """The :func:`tiny_config` run on the images at ``data_path`` (for module-scoped fixtures too)."""
    return RunConfig(
        experiment_name="tiny",
        data_path=str(data_path),
        # small_cnn trains in a fraction of resnet18's time, and its training state (kept every epoch) is tiny;
        # tests that need resnet18's layers ask for it.
        backbone="small_cnn",
        image_size=32,
        epochs=2,
        batch_size=8,
        learning_rate=3e-3,
        batch_metrics_every=2,
        gradient_every=2,
        early_stopping_patience=0,
        val_fraction=0.25,
        test_fraction=0.25,
        max_threads=2,
    ).with_overrides(**overrides)
