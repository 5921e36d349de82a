"""Screenshots of the list and the session page at desktop and phone widths, in a cluster
of their own so that they show only their own data (tests/browser/artifacts/)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP, PHONE, new_session, screenshot

pytestmark = pytest.mark.services


def test_screenshots_of_the_list_and_the_session_page(person, rest):
    api = rest("alice")
    session = new_session(api, "Onboarding redesign", editors=("bob",), viewers=("carol",))
    new_session(api, "Quarterly planning", editors=("bob",))
    bob_api = rest("bob")
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
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        screenshot(page, f"session-{size}")
        page.evaluate("window.scrollTo(0, 0)")
        screenshot(page, f"session-{size}-top")
        alice.goto("/")
        expect(page.locator(".session-card").first).to_contain_text("Onboarding redesign")
        screenshot(page, f"list-{size}")
        alice.open_session(session["id"])
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    dark = person("bob", color_scheme="dark")
    dark.open_session(session["id"])
    screenshot(dark.page, "session-desktop-dark")
    assert alice.errors == [] and dark.errors == []
