import os
import tempfile

# Before any Qt import: no display here, and keep QSettings/user dirs out of the real home.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
_home = tempfile.mkdtemp(prefix="pneumofl-qt-home-")
for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
    os.environ[var] = os.path.join(_home, var.lower())

import pytest  # noqa: E402

from core.config import RunConfig  # noqa: E402
from tests.imaging import write_folder_dataset  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def gc_on_gui_thread(qapp):
    """As in the app: Python's cyclic GC only runs on the GUI thread (a collection in a training or viewer thread
    can destroy Qt objects there and deadlock Qt)."""
    import gc

    from desktop.app import collect_garbage_on_gui_thread

    guard = collect_garbage_on_gui_thread()
    yield guard
    guard.timer.stop()
    gc.enable()


def use_app_style() -> None:
    """The app's style sheet (desktop/app.py sets it), set once: a change restyles every widget alive, which has
    crashed Qt while earlier windows were being deleted."""
    from pathlib import Path

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    style = (Path(__file__).parents[2] / "resources" / "style.qss").read_text(encoding="utf-8")
    if app.styleSheet() != style:
        app.setStyleSheet(style)


@pytest.fixture(scope="session", autouse=True)
def app_style(qapp):
    """Every desktop test sees the app as users do: with its style sheet (fonts, spacing)."""
    use_app_style()


@pytest.fixture(scope="session")
def gui_dataset(tmp_path_factory):
    return write_folder_dataset(tmp_path_factory.mktemp("gui-xrays"), per_class=16, size=32)


def tiny_gui_config(data_path) -> RunConfig:
    """Two epochs of 32 px images on one thread: a GUI run that takes seconds."""
    return RunConfig(
        experiment_name="gui",
        data_path=str(data_path),
        backbone="small_cnn",  # seconds per run, and a tiny training state
        image_size=32,
        epochs=2,
        batch_size=8,
        batch_metrics_every=1,
        gradient_every=1,
        early_stopping_patience=0,
        val_fraction=0.25,
        test_fraction=0.25,
        max_threads=1,
    )


@pytest.fixture
def gui_config(gui_dataset):
    return tiny_gui_config(gui_dataset)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'gui.db'}"
