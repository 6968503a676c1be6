"""Every page of the app in each of its states, for the layout tests and packaging/screenshots.py.

A scene puts a real :class:`MainWindow` (or one of its dialogs) into one page and state: empty (first start),
running (live events arriving), finished (recorded runs, a recorded federation, images read) and failed (a banner
with a sentence). :func:`build_world` records what the finished states show, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QWidget

from core.events import BatchMetrics, EpochEnd, GradientStats, TrainingStart
from core.persistence import Database
from core.persistence.federation import load_federation
from core.training.recorded import train_and_record
from desktop.gui.main_window import MainWindow
from desktop.settings import Settings
from tests.desktop.conftest import tiny_gui_config, use_app_style
from tests.imaging import write_folder_dataset
from tests.recorded_federation import record_federation

# Logical sizes: 1366x768 and 1920x1080 at 100 %; 1920x1080 at 150 % is 1280x720 (the tightest); 4K at 200 % is
# 1920x1080 logical, checked in a process of its own with QT_SCALE_FACTOR=2 (tests/desktop/test_fit.py).
SIZES = {"1366x768": (1366, 768), "1920x1080": (1920, 1080), "1280x720": (1280, 720)}
LONG_LAYERS = ["conv1.weight", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.conv2.weight"]
FAILURE = (
    "The dataset in /data/hospital-export has no NORMAL folder: put the images of each class in a folder named after "
    "it (NORMAL, PNEUMONIA), or choose a CSV."
)


@dataclass
class World:
    """What the finished states show: two centralized runs, a recorded federation, images to read."""

    db_url: str
    runs: tuple[int, int]
    federation: int
    images: list[Path]


def build_world(folder: Path) -> World:
    """Record two tiny runs and a federation into a new SQLite database under ``folder``."""
    data = write_folder_dataset(folder / "xrays", per_class=12, size=32)
    db_url = f"sqlite:///{folder / 'scenes.db'}"
    db = Database.open(db_url)
    try:
        config = tiny_gui_config(data).with_overrides(epochs=2)
        first = train_and_record(config, db, work_dir=folder / "run-1").run_id
        second = train_and_record(config.with_overrides(learning_rate=5e-4), db, work_dir=folder / "run-2").run_id
        federation = record_federation(db)
    finally:
        db.close()
    images = sorted((data / "PNEUMONIA").glob("*.png"))[:3] + sorted((data / "NORMAL").glob("*.png"))[:2]
    return World(db_url, (first, second), federation, images)


def _live_training(window: MainWindow) -> None:
    """The Training page while a run is going: epochs, batches and gradients of long-named layers arriving."""
    board = window.training_page.dashboard
    board.handle_event(TrainingStart(run_id=9, experiment_name="live", total_epochs=6, steps_per_epoch=20))
    rng = np.random.default_rng(0)
    for step in range(1, 61):
        board.handle_event(BatchMetrics(epoch=step // 20 + 1, step=step, metrics={"train_loss": float(rng.random())}))
        norms = {name: float(rng.random()) for name in LONG_LAYERS}
        board.handle_event(GradientStats(step=step, global_norm=1.0, layer_norms=norms))
    for epoch in (1, 2, 3):
        metrics = {f"{s}_{m}": float(rng.random()) for s in ("train", "val") for m in ("loss", "recall", "auroc")}
        metrics |= {f"{s}_{m}": float(rng.random()) for s in ("train", "val") for m in ("accuracy", "specificity")}
        metrics |= {"val_f1": 0.8, "val_cm_tp": 5.0, "val_cm_fp": 1.0, "val_cm_tn": 4.0, "val_cm_fn": 0.0}
        roc = {"val_roc": {"fpr": [0, 0.2, 1], "tpr": [0, 0.9, 1]}}
        board.handle_event(EpochEnd(epoch=epoch, metrics=metrics, curves=roc))
    board.refresh()


def _federation_finished(window: MainWindow, world: World) -> None:
    db = Database.open(world.db_url)
    try:
        with db.begin() as session:
            history = load_federation(session, world.federation)
    finally:
        db.close()
    window.federation_page.dashboard.load_history(history)
    window.federation_page.dashboard.refresh()


def _read_images(window: MainWindow, world: World, wait: Callable[[Callable[[], bool]], None]) -> None:
    page = window.reading_page
    page.select_run(world.runs[0])
    page.add_paths(world.images)
    page.start_or_cancel()
    wait(lambda: bool(page.readings) and not page.reading)
    page.show_reading(0)


TABS = ("training", "federation", "runs", "audit", "read-images")
SCENES = (
    *(f"{tab}-empty" for tab in TABS),  # the first start: no runs, nothing chosen
    "training-running",
    "training-failed",
    "federation-simulate-finished",
    "federation-server-finished",
    "federation-site-finished",
    "federation-failed",
    "runs-finished",
    "runs-failed",
    "run-view",
    "run-view-federation",
    "compare",
    "audit-finished",
    "read-images-finished",
    "read-images-failed",
)
FEDERATION_MODES = ("simulate", "server", "site")


def show_scene(name: str, window: MainWindow, world: World, wait: Callable[[Callable[[], bool]], None]) -> None:
    """Put ``window`` (fresh, on the world's database, or an empty one for ``*-empty``) into scene ``name``.

    ``wait(condition)`` waits, with the event loop running, until ``condition()`` holds (reading images).
    """
    tab, _, state = name.rpartition("-")
    pages = {
        "training": window.training_page,
        "federation": window.federation_page,
        "runs": window.runs_page,
        "audit": window.audit_page,
        "read-images": window.reading_page,
    }
    if name == "run-view":
        window.open_run(world.runs[0])
    elif name == "run-view-federation":
        window.open_run(world.federation)
    elif name == "compare":
        window.compare_runs(list(world.runs))
    elif tab.startswith("federation-"):  # a mode of the Federation page, with the recorded federation drawn
        window.tabs.setCurrentWidget(window.federation_page)
        window.federation_page.modes.setCurrentIndex(FEDERATION_MODES.index(tab.removeprefix("federation-")))
        _federation_finished(window, world)
    else:
        page = pages[tab]
        window.tabs.setCurrentWidget(page)
        if state == "failed":
            page.banner.show_message(FAILURE, "Traceback (details) ...")
        elif name == "training-running":
            _live_training(window)
        elif name == "read-images-finished":
            _read_images(window, world, wait)
        elif state == "finished":
            page.refresh()


def dialogs(window: MainWindow) -> Iterator[tuple[str, QWidget]]:
    """The dialogs, each shown over ``window`` (closed by the caller)."""
    from desktop.gui.consent_dialog import ConsentDialog
    from desktop.gui.pacs_dialog import PacsStudyDialog
    from desktop.gui.pacs_preferences import PacsNodeDialog
    from desktop.gui.preferences import PreferencesDialog

    plan = [
        "Server: hospital-federation.example (CA SHA-256 0f:1e:...).",
        "Federation 'pneumonia-2026': resnet18 at 224 px, fedavg, 10 rounds of 2 local epochs, at least 3 sites.",
        "Each round this site sends 11,170,753 weights (44.7 MB as float32) with this site's name and the numbers "
        "num-examples, train_loss, train_accuracy, val_loss, val_auroc, global_val_auroc, train_seconds.",
    ]
    yield "preferences", PreferencesDialog(window.settings, window)
    yield "consent", ConsentDialog(plan, "ab" * 32, window)
    yield "pacs-study", PacsStudyDialog(window.db, window)
    yield "pacs-node", PacsNodeDialog(None, window)


def new_window(db_url: str, size: tuple[int, int]) -> MainWindow:
    """The main window on ``db_url`` at ``size``, shown, with the app's style sheet."""
    use_app_style()
    window = MainWindow(Settings(db_url=db_url), persist_settings=False)
    window.resize(*size)
    window.show()
    return window
