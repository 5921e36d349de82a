"""The ops console in a real browser (Chromium through Playwright) against two real
uvicorn processes on PostgreSQL and Redis: the figures it shows come from the whole
cluster and change without a reload.

The browser comes from tests/browser/conftest.py; the cluster here is the console's own
(fast registry heartbeats and polls, a slow assistant).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import ARTIFACTS, DESKTOP, PHONE
from tests.support.servers import Cluster

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def cluster(postgres_url, redis_url) -> Iterator[Cluster]:
    running = Cluster(
        postgres_url=postgres_url,
        redis_url=redis_url,
        processes=2,
        env={
            "CHORUS_WORKER_HEARTBEAT_SECONDS": "0.5",  # the registry follows within a second
            "CHORUS_OPS_POLL_SECONDS": "1",
            "CHORUS_LOCAL_TOKEN_DELAY_MS": "120",  # an answer takes several seconds
            "DJANGO_DEBUG": "1",  # Django serves /static/ itself (no proxy here)
        },
    ).start()
    running.tokens = running.create_users("alice", "bob", "carol", "operator", staff=("operator",))
    yield running
    running.stop()


@pytest.fixture
def console(cluster, browser):
    """A page signed in as the staff user `operator`, on /ops/ of process 0."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(20_000)
    dialogs, failures = [], []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: failures.append(str(error)))
    page.on("console", lambda message: failures.append(message.text) if "ops console" in message.text else None)
    page.goto(cluster.urls[0] + "/ops/")
    page.fill('input[name="username"]', "operator")
    page.fill('input[name="password"]', "pw")
    page.press('input[name="password"]', "Enter")
    page.wait_for_url("**/ops/")
    page.wait_for_selector('#ops-console[data-ready="true"]')
    page.dialogs = dialogs
    yield page
    # Every refresh rendered: no script error, no failed poll, the badge still says live.
    assert failures == []
    assert page.locator("#ops-status").text_content() == "live"
    context.close()


def api(cluster, index: int, user: str) -> httpx.Client:
    return httpx.Client(
        base_url=cluster.urls[index], headers={"Authorization": f"Token {cluster.tokens[user]}"}, timeout=20
    )


def new_session(cluster, title: str) -> str:
    with api(cluster, 0, "alice") as client:
        session = client.post("/api/v1/sessions/", json={"title": title}).json()
        for name, role in (("bob", "editor"), ("carol", "viewer")):
            client.post(f"/api/v1/sessions/{session['id']}/members/", json={"username": name, "role": role})
    return session["id"]


@contextlib.contextmanager
def open_streams(cluster, session_id: str, placements: list[tuple[int, str]]) -> Iterator[None]:
    """Streams held open (their first bytes read) on the given (process, user) pairs."""
    readers = []  # held: a dropped iterator would close its response
    with contextlib.ExitStack() as stack:
        for index, user in placements:
            client = stack.enter_context(api(cluster, index, user))
            response = stack.enter_context(client.stream("GET", f"/sse/sessions/{session_id}/", timeout=None))
            assert response.status_code == 200
            reader = response.iter_raw()
            next(reader)  # the stream is open on the server
            readers.append(reader)
        yield


def session_subscribers(page, session_id: str) -> str | None:
    row = page.locator(f'#sessions-body tr[data-session-id="{session_id}"] td:nth-child(2)')
    return row.text_content(timeout=1000) if row.count() else None


def test_subscribers_of_streams_on_two_processes_appear_without_a_reload(cluster, console):
    session_id = new_session(cluster, HOSTILE)
    console.evaluate("window.__sameDocument = true")
    with open_streams(cluster, session_id, [(0, "alice"), (1, "bob"), (1, "carol")]):
        console.wait_for_function(
            """(id) => {
                const cell = document.querySelector(`#sessions-body tr[data-session-id="${id}"] td:nth-child(2)`);
                return cell && cell.textContent === "3";
            }""",
            arg=session_id,
        )
        assert console.locator('[data-summary="subscribers"]').text_content() == "3"
        assert console.locator('[data-summary="workers"]').text_content() == "2"
        assert console.locator("#workers-body tr.worker-alive").count() == 2
        # The hostile title arrived through the script's rendering: text, not an element.
        link = console.locator(f'#sessions-body tr[data-session-id="{session_id}"] a')
        assert link.text_content() == HOSTILE
        assert console.locator("img").count() == 0
    console.wait_for_function(
        '(id) => !document.querySelector(`#sessions-body tr[data-session-id="${id}"]`)', arg=session_id
    )
    assert console.evaluate("window.__sameDocument") is True  # updated in place, never reloaded
    assert console.dialogs == []


def test_a_regenerations_progress_bar_moves_on_the_console(cluster, console):
    session_id = new_session(cluster, "Launch plan")
    console.evaluate("window.__sameDocument = true")
    with open_streams(cluster, session_id, [(0, "alice"), (1, "bob")]), api(cluster, 1, "bob") as bob:
        posted = bob.post(
            f"/api/v1/sessions/{session_id}/messages/",
            json={"content": "Draft the announcement for the launch, with risks and owners", "reply": True},
        )
        assert posted.status_code == 201, posted.text
        regeneration_id = posted.json()["regenerationId"]
        bar = f'#regenerations-body tr[data-regeneration-id="{regeneration_id}"] [role="progressbar"]'
        console.wait_for_function(
            "(sel) => { const b = document.querySelector(sel);"
            " return b && Number(b.getAttribute('aria-valuenow')) > 0; }",
            arg=bar,
        )
        first = int(console.locator(bar).get_attribute("aria-valuenow"))
        console.wait_for_function(
            "([sel, first]) => { const b = document.querySelector(sel);"
            " return b && Number(b.getAttribute('aria-valuenow')) > first; }",
            arg=[bar, first],
        )
        second = int(console.locator(bar).get_attribute("aria-valuenow"))
        assert 0 < first < second <= 100
        width = console.locator(f"{bar} span").evaluate("(span) => span.style.width")
        assert width.endswith("%") and first < float(width[:-1]) <= 100  # the bar is drawn, not just labelled
        save_screenshots(console)
        # It finishes and leaves the list; the summary goes back to nothing running.
        console.wait_for_function("(sel) => !document.querySelector(sel)", arg=bar, timeout=60_000)
    assert console.evaluate("window.__sameDocument") is True


def save_screenshots(page) -> None:
    """The console at desktop and phone widths, as test artifacts; the desktop one is
    also the README's picture (docs/screenshots/console.png)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=str(ARTIFACTS / "console-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(ARTIFACTS / "console-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)
    if os.environ.get("CHORUS_UPDATE_SCREENSHOTS"):
        target = ROOT / "docs" / "screenshots" / "console.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True)


HIDE = """() => {
  Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
  document.dispatchEvent(new Event("visibilitychange"));
}"""
SHOW = """() => {
  delete document.hidden;
  delete document.visibilityState;
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_polling_pauses_while_the_tab_is_hidden(console):
    polls = []
    console.on("request", lambda request: polls.append(request.url) if "/ops/live/" in request.url else None)
    console.evaluate(HIDE)
    assert console.locator("#ops-status").text_content() == "paused"
    polls.clear()
    console.wait_for_timeout(3500)  # proving an absence: three poll intervals go by
    assert polls == []
    with console.expect_request(lambda request: "/ops/live/" in request.url, timeout=5000):
        console.evaluate(SHOW)  # polls at once when shown again
    console.wait_for_function("() => document.getElementById('ops-status').textContent === 'live'")


def test_a_notice_sent_from_the_session_page_reaches_a_stream_on_the_other_process(cluster, console):
    session_id = new_session(cluster, "Notice board")
    with api(cluster, 1, "carol") as carol, carol.stream("GET", f"/sse/sessions/{session_id}/", timeout=30) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        console.goto(f"{cluster.urls[0]}/ops/sessions/{session_id}/")
        roles = (
            console.locator("table")
            .first.locator("tbody tr")
            .evaluate_all(
                "(rows) => rows.map((row) => [row.cells[0].textContent.trim(), row.cells[1].textContent.trim()])"
            )
        )
        assert roles == [["alice", "owner"], ["bob", "editor"], ["carol", "viewer"]]
        save_page_screenshots(console, "session")
        console.fill('textarea[name="message"]', f"Maintenance at 18:00 UTC {HOSTILE}")
        console.click("text=Review and send…")
        console.wait_for_url("**/notice/")
        assert console.locator("blockquote").text_content() == f"Maintenance at 18:00 UTC {HOSTILE}"
        console.click("text=Send the notice")
        console.wait_for_url(f"**/ops/sessions/{session_id}/")
        assert "Notice sent as event" in console.locator(".ops-message-success").text_content()
        assert console.locator("img").count() == 0
        for line in lines:
            if line.startswith("data:") and '"type":"system"' in line:
                assert f"Maintenance at 18:00 UTC {HOSTILE}" in line.replace("\\u003c", "<")
                break
    audit = console.locator("table").last.locator("tbody tr").first.text_content()
    assert "operator" in audit and "sent a system notice" in audit
    console.goto(f"{cluster.urls[0]}/ops/")  # the fixture checks the console is live at the end
    console.wait_for_selector('#ops-console[data-ready="true"]')


def save_page_screenshots(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


# Per ops table on the page: its width and its container's, and for `cards` tables how its
# head and rows are laid out.
TABLE_LAYOUT = """
() => [...document.querySelectorAll("table.ops-table")].map((table) => ({
  width: table.getBoundingClientRect().width,
  container: table.parentElement.clientWidth,
  cards: table.classList.contains("cards"),
  head: getComputedStyle(table.tHead).display,
  row: ((row) => (row ? getComputedStyle(row).display : null))(
    [...table.tBodies[0].rows].find((row) => !row.classList.contains("empty")),
  ),
}))
"""


def test_ops_tables_take_the_full_width_at_desktop_and_become_cards_on_a_phone(cluster, console):
    new_session(cluster, "Wide tables")
    for path in ("/ops/", "/ops/sessions/"):
        console.goto(cluster.urls[0] + path)
        console.set_viewport_size(DESKTOP)
        tables = console.evaluate(TABLE_LAYOUT)
        assert tables, path
        for table in tables:
            assert abs(table["width"] - table["container"]) <= 1, (path, table)
            assert table["head"] != "none", (path, table)
        console.set_viewport_size(PHONE)
        for table in console.evaluate(TABLE_LAYOUT):
            if table["cards"]:  # one card per row, as wide as the screen (others scroll sideways)
                assert table["head"] == "none" and table["row"] in ("grid", None), (path, table)
                assert abs(table["width"] - table["container"]) <= 1, (path, table)
        console.set_viewport_size(DESKTOP)
    console.goto(f"{cluster.urls[0]}/ops/")  # the fixture checks the console is live at the end
    console.wait_for_selector('#ops-console[data-ready="true"]')
