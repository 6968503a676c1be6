"""Screenshots of the real application on a virtual display, for the README.

Runs two short demo trainings from the Training page and saves:
  training.png  the Training page mid-run (live dashboard)
  runs.png      the Runs page with both runs
  compare.png   the two runs overlaid on val_auroc
  federation.png  the Federation page after a simulated 3-site, 3-round federation on the demo data
  web.png       the browser dashboard (headless Chromium) on that federation's server run

Usage (Debian: apt-get install xvfb libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxkbcommon-x11-0):
  xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python packaging/screenshots.py [OUT_DIR]
Without Xvfb it falls back to Qt's offscreen platform (same pixels, no window manager).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from desktop.app import collect_garbage_on_gui_thread  # noqa: E402
from desktop.gui.main_window import MainWindow  # noqa: E402
from desktop.settings import Settings  # noqa: E402


def browser_shot(db_url: str, run_id: int | None, path: Path) -> None:
    """The browser dashboard on ``run_id``, in Debian's headless Chromium (as the browser tests drive it)."""
    from playwright.sync_api import sync_playwright

    from tests.web.conftest import CHROMIUM_ARGS, TOKEN, ServedHub, chromium_path, sign_in

    served = ServedHub(db_url, TOKEN)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            sign_in(page, served)
            page.wait_for_selector("table.runs")
            page.goto(f"{served.page}#/run/{run_id}")
            page.wait_for_selector("#site-replies tbody tr")
            page.wait_for_timeout(800)
            page.screenshot(path=str(path), full_page=True)
            browser.close()
        print(f"saved {path}", flush=True)
    finally:
        served.stop()


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "packaging" / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication(sys.argv)
    gc_guard = collect_garbage_on_gui_thread()  # as the app does  # noqa: F841
    style = ROOT / "resources" / "style.qss"
    app.setStyleSheet(style.read_text(encoding="utf-8"))
    tmp = tempfile.mkdtemp(prefix="pneumofl-shots-")
    window = MainWindow(Settings(db_url=f"sqlite:///{tmp}/shots.db"), persist_settings=False)
    window.resize(1600, 1000)
    window.show()
    page = window.training_page
    runs: list[int] = []
    state = {"phase": "first", "shot": False}

    def save(name: str) -> None:
        window.grab().save(str(out / name))
        print(f"saved {out / name}", flush=True)

    def start(epochs: int, lr: float) -> None:
        page.use_demo_data()
        page.epochs.setValue(epochs)
        page.learning_rate.setValue(lr)
        page.start()

    def tick() -> None:
        if state["phase"] == "federation":
            fed = window.federation_page
            if fed.last_outcome is not None and not fed.running:
                timer.stop()
                fed.dashboard.refresh()
                app.processEvents()
                save("federation.png")
                window.close()
                browser_shot(f"sqlite:///{tmp}/shots.db", fed.last_outcome.server_run_id, out / "web.png")
            return
        val = page.dashboard.store["val_auroc"]
        if state["phase"] == "first" and not state["shot"] and len(val) >= 3:
            page.dashboard.refresh()
            save("training.png")
            state["shot"] = True
        if page.last_result is not None and not page.running:
            runs.append(page.last_result.run_id)
            page.last_result = None
            if state["phase"] == "first":
                state["phase"] = "second"
                start(4, 5e-4)
                return
            timer.stop()
            window.tabs.setCurrentWidget(window.runs_page)
            window.runs_page.refresh()
            app.processEvents()
            save("runs.png")
            window.compare_runs(runs)
            window.tabs.currentWidget().metric.setCurrentText("val_auroc")
            app.processEvents()
            save("compare.png")
            state["phase"] = "federation"
            fed = window.federation_page
            window.tabs.setCurrentWidget(fed)
            fed.sim_sites.setValue(3)
            fed.sim_plan.rounds.setValue(3)
            fed.sim_plan.min_sites.setValue(3)
            fed.simulate()
            timer.start(500)

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(200)
    start(6, 2e-3)
    app.exec()


if __name__ == "__main__":
    main()
