"""The browser dashboard in a real headless Chromium: sign-in, runs from the database, live training, escaping,
and a page of another origin refused at the socket."""

from __future__ import annotations

import http.server
import os
import threading
import time
from pathlib import Path

import pytest

from core.broadcast.hub import HubSink
from core.persistence import Database
from core.persistence.runs import create_run
from core.training.recorded import train_and_record
from tests.core.conftest import tiny_run_config
from tests.imaging import write_folder_dataset
from tests.recorded_federation import record_federation
from tests.web.conftest import TOKEN, ServedHub, sign_in, wait_until


@pytest.fixture(scope="module")
def xrays(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("web-xrays"), per_class=16, size=32)


def record(db_url: str, xrays: Path, tmp_path: Path, **overrides) -> int:
    config = tiny_run_config(xrays, backbone="small_cnn", max_threads=1, **overrides)
    db = Database.open(db_url)
    try:
        result = train_and_record(config, db, work_dir=tmp_path / f"ckpt-{config.experiment_name[:8]}")
    finally:
        db.close()
    assert result.status == "completed", result.error
    return int(result.run_id)


def test_sign_in_exchanges_the_token_for_an_http_only_cookie_and_a_wrong_token_is_refused(page, served):
    response = page.goto(served.page)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp

    page.fill("#token", "not-the-token")
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#sign-in-error:has-text('not this node')")
    assert page.locator("table.runs").count() == 0

    page.fill("#token", TOKEN)
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("table.runs")
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    kept = page.evaluate(
        "[document.cookie, JSON.stringify(localStorage), JSON.stringify(sessionStorage), location.href]"
    )
    assert not any(TOKEN in text for text in kept), kept  # the token is nowhere the page can read it back
    assert page.errors == []


def test_a_finished_run_opens_from_the_database(page, db_url, xrays, tmp_path):
    run_id = record(db_url, xrays, tmp_path, experiment_name="finished before the hub", epochs=3)
    served = ServedHub(db_url)  # started after the run: the hub never saw its events
    try:
        sign_in(page, served)
        page.wait_for_selector(f"table.runs tr[data-run='{run_id}']")
        page.click(f"table.runs tr[data-run='{run_id}']")
        page.wait_for_selector("#final-stats")
        epochs = page.evaluate("window.pneumofl.view.epochCharts.loss.points.size")
        table = page.inner_text("#final-stats")
    finally:
        served.stop()
    assert epochs == 3
    assert "AUROC" in table and "Test" in table
    assert page.inner_text("#run-name") == "finished before the hub"
    assert page.errors == []


def test_live_training_draws_each_epoch_within_a_second_of_its_event(page, served, db_url, xrays, tmp_path):
    created: list[int] = []
    config = tiny_run_config(
        xrays, backbone="small_cnn", max_threads=1, epochs=12, experiment_name="live", batch_metrics_every=1
    )
    db = Database.open(db_url)
    trainer = threading.Thread(
        target=lambda: train_and_record(
            config, db, sinks=[HubSink(served.hub)], on_run_created=created.append, work_dir=tmp_path / "live"
        )
    )
    sign_in(page, served)
    page.wait_for_selector("table.runs")
    trainer.start()
    try:
        deadline = time.monotonic() + 60
        while not created or created[0] not in served.hub.channels:
            assert time.monotonic() < deadline, "the run never reached the hub"
            time.sleep(0.05)
        page.goto(f"{served.page}#/run/{created[0]}")
        wait_until(page, "window.pneumofl.epochLatencies.length >= 3", timeout=60)
        latencies = page.evaluate("window.pneumofl.epochLatencies")
        batches = page.evaluate("window.pneumofl.latencies.length")
    finally:
        trainer.join(120)
        db.close()
    assert max(latencies) < 1000, f"epoch points drawn {latencies} ms after their events"
    assert batches > 0, "batch points were drawn live too"
    page.wait_for_selector("#run-status:has-text('completed')")
    assert page.errors == []


def test_names_from_the_database_are_shown_as_text(page, served, db_url):
    name = "<img src=x onerror=alert(1)>"
    db = Database.open(db_url)
    try:
        with db.begin() as session:
            run_id = create_run(session, experiment_name=name, config={})
    finally:
        db.close()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, served)
    row = page.wait_for_selector(f"table.runs tr[data-run='{run_id}']")
    assert name in row.inner_text()
    page.click(f"table.runs tr[data-run='{run_id}']")
    page.wait_for_selector("#run-name")
    assert page.inner_text("#run-name") == name
    assert page.locator("img[src='x']").count() == 0 and dialogs == []


def test_a_page_from_another_origin_cannot_open_the_socket(page, served, tmp_path):
    sign_in(page, served)
    page.wait_for_selector("#connection:has-text('live')")  # the dashboard's own socket is accepted
    assert served.viewers() == 1
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "index.html").write_text(
        "<!doctype html><script>"
        f"const ws = new WebSocket('ws://127.0.0.1:{served.hub.port}/');"
        "ws.onopen = () => document.title = 'opened';"
        "ws.onerror = ws.onclose = () => document.title = 'refused';"
        "</script>",
        encoding="utf-8",
    )
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "evil"), **k)  # noqa: E731
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        other = page.context.new_page()  # same browser, same cookie jar: the session cookie is there
        other.goto(f"http://127.0.0.1:{evil.server_port}/")
        wait_until(other, "document.title !== ''", timeout=10)
        title = other.title()
    finally:
        evil.shutdown()
    assert title == "refused"
    assert served.viewers() == 1


def test_a_federation_shows_each_site_per_round_and_failures_in_red(page, served, db_url):
    db = Database.open(db_url)
    try:
        run_id = record_federation(db)
    finally:
        db.close()
    sign_in(page, served)
    page.wait_for_selector("table.runs")
    page.goto(f"{served.page}#/run/{run_id}")
    page.wait_for_selector("#site-replies tbody tr")
    rows = page.locator("#site-replies tbody tr")
    assert rows.count() == 5
    failed = page.locator("#site-replies tbody tr.failed")
    assert failed.count() == 1 and "east" in failed.inner_text() and "offline" in failed.inner_text()
    assert (
        page.eval_on_selector("#site-replies tbody tr.failed td", "td => getComputedStyle(td).color")
        == "rgb(176, 0, 32)"
    )
    heat = page.inner_text("#cross-site")
    assert "north" in heat and "0.90" in heat and "0.80" in heat  # north's round 2 and south's round 2
    assert "ε = 3.00" in page.inner_text("#privacy")
    assert page.evaluate("window.pneumofl.view.federation.siteChart.labels") == ["north", "south"]
    # Rounds are counted: the round axes tick at whole numbers only.
    for chart in ("server", "siteChart"):
        ticks = page.evaluate(f"window.pneumofl.view.federation.{chart}.plot.axes[0]._splits")
        assert ticks and all(float(t).is_integer() for t in ticks), (chart, ticks)
    # The server has no test split: its operating points show validation rows only, and say why.
    points = page.inner_text("#operating-points")
    assert "Validation sensitivity" in points and "Test" not in points
    assert "no test split" in page.inner_text("#no-test-split")
    assert page.errors == []
    if os.environ.get("PNEUMOFL_WEB_SCREENSHOT"):
        page.screenshot(path=os.environ["PNEUMOFL_WEB_SCREENSHOT"], full_page=True)


@pytest.mark.parametrize("width, height", [(1366, 768), (1920, 1080)])
def test_pages_fit_the_screen_without_scrolling_sideways_or_overlapping_cards(page, served, db_url, width, height):
    db = Database.open(db_url)
    try:
        run_id = record_federation(db)
    finally:
        db.close()
    page.set_viewport_size({"width": width, "height": height})
    sign_in(page, served)
    page.wait_for_selector("table.runs")
    for name, route, ready in (("runs", "", "table.runs"), ("federation", f"#/run/{run_id}", "#site-replies tbody tr")):
        page.goto(f"{served.page}{route}")
        page.wait_for_selector(ready)
        page.wait_for_timeout(300)  # the charts size themselves to their cards
        sideways = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert sideways <= 0, f"{name} at {width}px scrolls {sideways}px sideways"
        overlaps = page.evaluate(
            """() => {
              const cards = [...document.querySelectorAll('.card')].filter((c) => c.offsetParent !== null);
              const boxes = cards.map((c) => [c.id || c.querySelector('h2')?.textContent, c.getBoundingClientRect()]);
              const found = [];
              for (let i = 0; i < boxes.length; i++)
                for (let j = i + 1; j < boxes.length; j++) {
                  const [a, p] = boxes[i], [b, q] = boxes[j];
                  if (p.left < q.right - 1 && q.left < p.right - 1 && p.top < q.bottom - 1 && q.top < p.bottom - 1)
                    found.push([a, b]);
                }
              return found;
            }"""
        )
        assert overlaps == [], f"{name} at {width}px: cards overlap {overlaps}"
    for chart in ("server", "siteChart"):
        ticks = page.evaluate(f"window.pneumofl.view.federation.{chart}.plot.axes[0]._splits")
        assert ticks and all(float(t).is_integer() for t in ticks), (chart, ticks)
    assert page.errors == []
