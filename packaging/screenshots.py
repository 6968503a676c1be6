"""Screenshots of the real application on a virtual display, for the README.

Runs two short demo trainings from the Training page and saves:
  training.png  the Training page mid-run (live dashboard)
  runs.png      the Runs page with both runs
  compare.png   the two runs overlaid on val_auroc
  federation.png  the Federation page after a simulated 3-site, 3-round federation on the demo data
  web.png       the browser dashboard (headless Chromium) on that federation's server run

With --matrix it writes instead every page in every state (tests/desktop/scenes.py: empty, running, finished,
failed) and every dialog at every screen size into OUT_DIR/matrix/<screen>/<scene>.png: 1366x768 and 1920x1080 at
100 %, 1920x1080 at 150 % and 3840x2160 at 200 % (each scale in a process of its own, QT_SCALE_FACTOR), and the
browser's pages at 1366 and 1920 wide.

Usage (Debian: apt-get install xvfb libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxkbcommon-x11-0):
  xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python packaging/screenshots.py [OUT_DIR]
  .venv/bin/python packaging/screenshots.py --matrix [OUT_DIR]
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


# (screen, QT_SCALE_FACTOR, logical size): what each screen shows the app at its scale.
SCREENS = (
    ("1366x768", "1", (1366, 768)),
    ("1920x1080", "1", (1920, 1080)),
    ("1920x1080-150", "1.5", (1280, 720)),
    ("3840x2160-200", "2", (1920, 1080)),
)


def matrix(out: Path) -> None:
    """Every scene and dialog at every screen: one process per scale, then the browser at two widths."""
    import subprocess

    for scale in sorted({scale for _, scale, _ in SCREENS}):
        env = os.environ | {"QT_SCALE_FACTOR": scale, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
        subprocess.run([sys.executable, __file__, "--matrix-scale", scale, str(out)], env=env, check=True)
    browser_matrix(out)


def matrix_at_scale(scale: str, out: Path) -> None:
    """The scenes and dialogs for the screens of one scale (this process's QT_SCALE_FACTOR)."""
    from tests.desktop.scenes import SCENES, build_world, dialogs, new_window, show_scene

    app = QApplication(sys.argv)
    gc_guard = collect_garbage_on_gui_thread()  # noqa: F841
    tmp = Path(tempfile.mkdtemp(prefix="pneumofl-matrix-"))
    world = build_world(tmp)
    empty = f"sqlite:///{tmp / 'empty.db'}"

    def wait(condition) -> None:
        while not condition():
            app.processEvents()

    for screen, factor, size in SCREENS:
        if factor != scale:
            continue
        folder = out / "matrix" / screen
        folder.mkdir(parents=True, exist_ok=True)
        for scene in SCENES:
            window = new_window(empty if scene.endswith("-empty") else world.db_url, size)
            show_scene(scene, window, world, wait)
            for _ in range(5):
                app.processEvents()
            window.grab().save(str(folder / f"{scene}.png"))
            window.training_page.dashboard.stop_timer()
            window.close()
        window = new_window(world.db_url, size)
        for name, dialog in dialogs(window):
            dialog.show()
            app.processEvents()
            dialog.grab().save(str(folder / f"dialog-{name}.png"))
            dialog.close()
        window.close()
        print(f"saved {len(SCENES)} pages and the dialogs into {folder}", flush=True)


def browser_matrix(out: Path) -> None:
    """The browser's run list and a federation's page at 1366x768 and 1920x1080."""
    from playwright.sync_api import sync_playwright

    from core.persistence import Database
    from tests.recorded_federation import record_federation
    from tests.web.conftest import CHROMIUM_ARGS, TOKEN, ServedHub, chromium_path, sign_in

    tmp = Path(tempfile.mkdtemp(prefix="pneumofl-matrix-web-"))
    db_url = f"sqlite:///{tmp / 'web.db'}"
    db = Database.open(db_url)
    run_id = record_federation(db)
    db.close()
    served = ServedHub(db_url, TOKEN)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            for width, height in ((1366, 768), (1920, 1080)):
                folder = out / "matrix" / f"browser-{width}"
                folder.mkdir(parents=True, exist_ok=True)
                page = browser.new_page(viewport={"width": width, "height": height})
                sign_in(page, served)
                page.wait_for_selector("table.runs")
                page.screenshot(path=str(folder / "runs.png"), full_page=True)
                page.goto(f"{served.page}#/run/{run_id}")
                page.wait_for_selector("#site-replies tbody tr")
                page.wait_for_timeout(500)
                page.screenshot(path=str(folder / "federation.png"), full_page=True)
                page.close()
                print(f"saved the browser's pages into {folder}", flush=True)
            browser.close()
    finally:
        served.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--matrix":
        matrix(Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / "packaging" / "screenshots"))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--matrix-scale":
        matrix_at_scale(sys.argv[2], Path(sys.argv[3]))
        return
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
