"""Fixtures for tests with real Flower processes: tiny data, a tiny plan, a hub collecting live events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from core.broadcast.collector import EventCollector
from core.config import RunConfig
from core.events import Event
from core.federated.processes import flower_processes_under as processes_under
from core.federated.settings import FederationConfig
from tests.imaging import write_folder_dataset


@pytest.fixture(scope="session")
def fl_data(tmp_path_factory) -> Path:
    """Tiny 32 px images in train/val/test folders: sites share out train, the server evaluates on val."""
    return write_folder_dataset(tmp_path_factory.mktemp("fl-xrays"), per_class=24, size=32, splits=True)


def tiny_plan(**overrides) -> FederationConfig:
    """Two rounds of one epoch of a small CNN on 32 px images, one thread per site."""
    training = RunConfig(
        experiment_name="fl-test",
        backbone="small_cnn",
        image_size=32,
        batch_size=8,
        batch_metrics_every=1,
        gradient_every=1,
        val_fraction=0.25,
        test_fraction=0.25,
        max_threads=1,
    )
    values = {"name": "fl-test", "rounds": 2, "local_epochs": 1, "min_sites": 2, "round_timeout": 60.0}
    return FederationConfig(training=training, **(values | overrides))


class HubThread(EventCollector):
    """The app's collector, recording every event producers push, for assertions."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        super().__init__([self.events.append])

    def of_type(self, kind: type) -> list:
        """The events of one type, in arrival order."""
        return [e for e in list(self.events) if isinstance(e, kind)]


@pytest.fixture
def hub() -> Iterator[HubThread]:
    with HubThread() as running:
        yield running


@pytest.fixture
def no_orphans(tmp_path) -> Iterator[Path]:
    """A work folder for nodes; the test fails if any Flower process started under it outlives the test."""
    work = tmp_path / "fl-work"
    try:
        yield work
    finally:
        left = processes_under(work)
        names = []
        for proc in left:
            try:
                names.append(" ".join(proc.cmdline()[:2]))
                proc.kill()
            except psutil.Error:
                continue
        assert not names, f"Flower processes outlived the test: {names}"
