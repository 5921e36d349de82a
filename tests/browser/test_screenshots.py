"""Screenshots of the list and the session page at desktop and phone widths, in a cluster
of their own so that they show only their own data (tests/browser/artifacts/): the session
page with two people online and one of them typing, the list with an unread badge."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP, PHONE, new_session, screenshot

pytestmark = pytest.mark.services


def test_screenshots_of_the_list_and_the_session_page(person, rest):
    api = rest("alice")
    session = new_session(api, "Onboarding redesign", editors=("bob",), viewers=("carol",))
    quarterly = new_session(api, "Quarterly planning", editors=("bob",))
    bob_api = rest("bob")
    # Unread news in the other session, older than the screenshot session's activity.
    assert (
        bob_api.post(f"/api/v1/sessions/{quarterly['id']}/messages/", json={"content": "Numbers are in."}).status_code
        == 201
    )
    base = f"/api/v1/sessions/{session['id']}/messages/"
    assert api.post(base, json={"content": "Kick-off: what should the first screen ask new users?"}).status_code == 201
    assert bob_api.post(base, json={"content": "I'd keep it to one question — their team's name."}).status_code == 201
    alice = person("alice")
    alice.open_session(session["id"])
    page = alice.page
    page.fill("#composer-input", "Can you summarise the trade-offs of a one-question first screen?")
    page.click("button[data-action=ask]")
    expect(page.locator(".message--assistant")).to_have_count(1)
    expect(page.locator(".message--assistant.is-running")).to_have_count(0, timeout=30_000)
    page.locator(".message--assistant .thoughts summary").click()
    # Two people online, one of them typing.
    bob = person("bob", server=1)
    bob.open_session(session["id"])
    expect(page.locator("#online-now .avatar")).to_have_count(2)
    expect(page.locator("#seen-by")).to_have_text("Seen by bob")
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        bob.page.locator("#composer-input").press_sequentially("Good summary", delay=20)
        expect(page.locator("#typing-line")).to_have_text("bob is typing…")
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        screenshot(page, f"session-{size}")
        page.evaluate("window.scrollTo(0, 0)")
        screenshot(page, f"session-{size}-top")
        alice.goto("/")
        expect(page.locator(".session-card").first).to_contain_text("Onboarding redesign")
        screenshot(page, f"list-{size}")
        alice.open_session(session["id"])
        bob.page.locator("#composer-input").fill("")
        bob.page.locator("#composer-input").dispatch_event("input")
    dark = person("bob", color_scheme="dark")
    dark.open_session(session["id"])
    screenshot(dark.page, "session-desktop-dark")
    assert alice.errors == [] and dark.errors == [] and bob.errors == []
