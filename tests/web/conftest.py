"""A real headless Chromium (Debian's, driven by Playwright) and a hub serving the browser dashboard."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.broadcast.hub import BroadcastHub
from core.persistence import Database

TOKEN = "browser-test-token-0123456789"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    """Debian's chromium (``.ci/run`` installs it); Playwright's own browser download is never used."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    return found


@pytest.fixture(scope="module")  # not session: Playwright's sync API holds the main thread's loop while it runs
def browser():
    path = chromium_path()
    if path is None:
        reason = "Chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{reason}. CI needs the browser tests.")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class ServedHub:
    """A hub with the dashboard, serving from its own thread's event loop (as the CLI's ``--serve`` does)."""

    def __init__(self, db_url: str, token: str = TOKEN) -> None:
        self.hub = BroadcastHub("127.0.0.1", 0, token, db_url=db_url)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.hub.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, name="test-hub", daemon=True)
        self.thread.start()
        assert started.wait(10), "the hub did not start"

    @property
    def page(self) -> str:
        assert self.hub.page_url is not None
        return self.hub.page_url

    def viewers(self) -> int:
        return len(self.hub.viewers)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.hub.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def db_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    Database.open(url).close()  # migrated, as the app does at start
    return url


@pytest.fixture
def served(db_url) -> Iterator[ServedHub]:
    hub = ServedHub(db_url)
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.errors = errors
    try:
        yield tab
    finally:
        context.close()


def wait_until(page, expression: str, timeout: float = 30.0) -> object:
    """Poll ``expression`` in the page until it is truthy (Playwright's own polling evaluates strings with eval,
    which the page's Content-Security-Policy rightly forbids)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        page.wait_for_timeout(50)


def sign_in(page, served: ServedHub, token: str = TOKEN) -> None:
    page.goto(served.page)
    page.fill("#token", token)
    page.click("#sign-in button[type=submit]")
