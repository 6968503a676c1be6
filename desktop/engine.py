"""The training engine (torch, Lightning, torchmetrics) loads in the background once the window is up.

Importing them takes seconds (most of the app's start-up before this existed); the window no longer waits for it.
A page that needs the engine before it is loaded says so, and a run started meanwhile simply waits for the
import on its own worker thread. captum and onnx load when their pages first read images or export a model.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

import psutil
from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)
LOADING = "Loading the training engine (torch, Lightning)…"


class EngineLoader(QObject):
    """Imports the training engine on a daemon thread; ``ready`` fires on the GUI thread when it is done.

    ``ready`` carries the seconds since the process started (the start-up benchmark reports them).
    """

    ready = Signal(float)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.loaded = threading.Event()
        self.ready.connect(self._freeze)

    def start(self) -> None:
        """Begin loading (once)."""
        threading.Thread(target=self._load, name="engine-loader", daemon=True).start()

    def _load(self) -> None:
        try:
            import core.training.recorded  # noqa: F401 - torch, Lightning, torchmetrics and our training code
        except Exception:  # the first run reports the same failure as a sentence when it imports again
            log.exception("loading the training engine failed")
        self.loaded.set()
        self.ready.emit(time.time() - psutil.Process().create_time())

    def _freeze(self, _seconds: float) -> None:
        # As at start-up (desktop.app.collect_garbage_on_gui_thread): the engine's millions of objects leave the
        # collector's reach, so later full collections on the GUI thread stay short. On the GUI thread only.
        gc.collect()
        gc.freeze()
