"""The browser test harness: real headless Chromium (Playwright, Debian's /usr/bin/chromium)
driving real uvicorn processes on PostgreSQL and Redis (tests.support.servers.Cluster).

One browser for the whole run; one browser context per person (a context is one cookie
jar, and holds at most 6 streams per origin). Screenshots go to tests/browser/artifacts/.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI
from tests.support.servers import Cluster, drop_templates

CHROMIUM = os.environ.get("CHORUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PASSWORD = "browser-test-pw"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 15_000  # the longest any single expectation waits


@pytest.fixture(scope="session", autouse=True)
def _drop_template_databases():
    yield
    drop_templates()


@pytest.fixture(scope="package")
def browser():
    """Headless Chromium, one for all the browser tests. Missing Chromium skips (loudly) —
    and fails under CI=true, so CI can never pass by not running the browser tests.

    Package scope, not session: Playwright's sync API keeps an event loop marked running in
    this thread while it is open, and the async tests that run after this package would
    fail to start their own ("cannot be called from a running event loop")."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        message = (
            f"BROWSER TESTS NOT RUN: no Chromium at {CHROMIUM} "
            "(apt-get install chromium, or set CHORUS_CHROMIUM to its path)"
        )
        if IN_CI:
            pytest.fail(message + " (CI=true: the browser tests must run)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def cluster(postgres_url, redis_url) -> Iterator[Cluster]:
    """Two uvicorn processes on one fresh database, serving the static files themselves;
    the local assistant streams visibly but quickly. `cluster.tokens` has alice, bob,
    carol and mallory's API tokens; they sign in with PASSWORD."""
    running = Cluster(
        postgres_url=postgres_url,
        redis_url=redis_url,
        server="uvicorn",
        processes=2,
        env={
            "CHORUS_SERVE_STATIC": "1",
            "CHORUS_LOCAL_TOKEN_DELAY_MS": "40",
            "CHORUS_LOCAL_THOUGHT_STEPS": "2",
            "CHORUS_PROGRESS_FLUSH_MS": "20",
            # The throttle counters live in the shared Redis under user ids, which every
            # fresh database reuses: runs back to back (or other suites) would share them.
            "CHORUS_REGENERATION_RATE_USER": "1000/minute",
            "CHORUS_REGENERATION_RATE_SESSION": "1000/minute",
            "CHORUS_TYPING_RATE_USER": "1000/minute",
            "CHORUS_READ_POSITION_RATE_USER": "1000/minute",
            "CHORUS_PRESENCE_RATE_USER": "1000/minute",
        },
    ).start()
    try:
        running.tokens = running.create_users("alice", "bob", "carol", "mallory", password=PASSWORD)
        yield running
    finally:
        running.stop()


@dataclass
class Person:
    """One person's browser context and page, with what their page did that it should not."""

    name: str
    page: object
    base_url: str
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def goto(self, path: str):
        return self.page.goto(self.base_url + path)

    def open_session(self, session_id: str) -> None:
        """Open a session's page and wait until its stream is live."""
        from playwright.sync_api import expect

        self.goto(f"/sessions/{session_id}/")
        expect(self.page.locator("#connection-badge")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


def sign_in(page, base_url: str, username: str, password: str = PASSWORD) -> None:
    """Through the login form, as a person would; lands on /."""
    page.goto(base_url + "/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(base_url + "/", timeout=WAIT_MS)


@pytest.fixture
def person(browser, cluster) -> Iterator[Callable[..., Person]]:
    """person("alice") -> Person signed in, in a context of their own, on server process
    `server` (default 0)."""
    contexts = []

    def make(name: str, *, server: int = 0, viewport: dict | None = None, sign: bool = True, **options) -> Person:
        context = browser.new_context(viewport=viewport or DESKTOP, **options)
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        someone = Person(name=name, page=page, base_url=cluster.urls[server])

        def on_dialog(dialog) -> None:
            someone.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda error: someone.errors.append(str(error)))
        if sign:
            sign_in(page, someone.base_url, name)
        return someone

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def rest(cluster) -> Iterator[Callable[..., httpx.Client]]:
    """rest("alice", server=1) -> an httpx client with alice's API token."""
    clients = []

    def make(name: str, *, server: int = 0) -> httpx.Client:
        client = httpx.Client(
            base_url=cluster.urls[server], headers={"Authorization": f"Token {cluster.tokens[name]}"}, timeout=20
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def new_session(api: httpx.Client, title: str, *, editors=(), viewers=()) -> dict:
    session = api.post("/api/v1/sessions/", json={"title": title})
    assert session.status_code == 201, session.text
    session_id = session.json()["id"]
    for name, role in [(n, "editor") for n in editors] + [(n, "viewer") for n in viewers]:
        added = api.post(f"/api/v1/sessions/{session_id}/members/", json={"username": name, "role": role})
        assert added.status_code == 201, added.text
    return api.get(f"/api/v1/sessions/{session_id}/").json()


def screenshot(page, name: str) -> Path:
    """Save a screenshot of what the page shows now as a test artifact."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
