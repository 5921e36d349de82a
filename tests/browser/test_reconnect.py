"""The session page across a server restart: the badge says so, and when the process is
back the page shows every message posted meanwhile, exactly once (CONTRACT §5 replay)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import new_session, screenshot

pytestmark = pytest.mark.services


def test_page_reconnects_after_a_restart_and_shows_each_missed_message_once(person, rest, cluster):
    alice_api = rest("alice", server=1)  # the process that stays up
    session = new_session(alice_api, "Through a restart", editors=("bob",))
    base = f"/api/v1/sessions/{session['id']}/messages/"
    assert alice_api.post(base, json={"content": "before the restart"}).status_code == 201
    alice = person("alice", server=0)
    alice.open_session(session["id"])
    page = alice.page
    badge = page.locator("#connection-badge")
    expect(page.get_by_text("before the restart", exact=True)).to_have_count(1)

    cluster.stop_process(0)
    try:
        expect(badge).to_have_attribute("data-state", "reconnecting", timeout=15_000)
        screenshot(page, "session-reconnecting")
        bob_api = rest("bob", server=1)
        missed = [f"while it was down #{n}" for n in range(5)]
        for n, text in enumerate(missed):
            api = alice_api if n % 2 else bob_api
            assert api.post(base, json={"content": text}).status_code == 201
        edited = alice_api.post(base, json={"content": "to be edited"}).json()
        assert alice_api.patch(f"{base}{edited['id']}/", json={"content": "edited while down"}).status_code == 200
        deleted = bob_api.post(base, json={"content": "to be deleted"}).json()
        assert bob_api.delete(f"{base}{deleted['id']}/").status_code == 204
        assert badge.get_attribute("data-state") in ("reconnecting", "offline")
    finally:
        cluster.restart_process(0)

    expect(badge).to_have_attribute("data-state", "live", timeout=30_000)
    for text in missed:
        expect(page.get_by_text(text, exact=True)).to_have_count(1)
    expect(page.get_by_text("edited while down", exact=True)).to_have_count(1)
    assert page.get_by_text("to be edited", exact=True).count() == 0
    assert page.get_by_text("to be deleted", exact=True).count() == 0
    # Nothing twice: the page shows exactly the stored messages, in order.
    stored = [m["content"] for m in alice_api.get(base).json()["results"]]
    assert page.locator(".message__content").all_text_contents() == stored

    # And it is live again: a message posted now, through the restarted process, arrives once.
    assert rest("bob", server=0).post(base, json={"content": "after the restart"}).status_code == 201
    expect(page.get_by_text("after the restart", exact=True)).to_have_count(1)
    assert page.locator(".message__content").count() == len(stored) + 1
    assert alice.errors == []


def test_when_the_browser_gives_up_the_client_takes_a_fresh_ticket_and_resumes(person, rest, cluster):
    """An HTTP error closes an EventSource for good (readyState CLOSED): the client asks
    for a new ticket and opens a new one at the last id it applied, with backoff."""
    api = rest("alice", server=1)
    session = new_session(api, "Given up", editors=("bob",))
    base = f"/api/v1/sessions/{session['id']}/messages/"
    assert api.post(base, json={"content": "first"}).status_code == 201
    alice = person("alice", server=0)
    page = alice.page
    tickets, streams = [], []
    page.on("request", lambda r: tickets.append(r.url) if r.url.endswith("/stream-ticket/") else None)
    page.on("request", lambda r: streams.append(r.url) if "/sse/sessions/" in r.url else None)
    granted_tickets = []

    def is_granted_ticket(response) -> bool:
        return response.url.endswith("/stream-ticket/") and response.status == 201

    page.on("response", lambda r: granted_tickets.append(r.url) if is_granted_ticket(r) else None)
    alice.open_session(session["id"])
    badge = page.locator("#connection-badge")
    expect(page.get_by_text("first", exact=True)).to_have_count(1)
    applied = api.get(f"/api/v1/sessions/{session['id']}/").json()["lastEventId"]
    assert len(tickets) == 1

    # Every stream request now fails with 503, so the browser's own retry gives up.
    page.route("**/sse/sessions/**", lambda route: route.fulfill(status=503, body="unavailable"))
    cluster.stop_process(0)
    try:
        expect(badge).to_have_attribute("data-state", "reconnecting", timeout=15_000)
        assert api.post(base, json={"content": "missed while closed"}).status_code == 201
    finally:
        cluster.restart_process(0)
    # Back up, but streams still answer 503: the client keeps taking fresh tickets, and
    # each EventSource it opens with one is refused and closed in turn.
    page.wait_for_event("response", predicate=is_granted_ticket, timeout=30_000)
    assert badge.get_attribute("data-state") != "live"
    page.unroute("**/sse/sessions/**")
    expect(badge).to_have_attribute("data-state", "live", timeout=30_000)
    expect(page.get_by_text("missed while closed", exact=True)).to_have_count(1)
    assert page.locator(".message__content").all_text_contents() == ["first", "missed while closed"]
    assert len(granted_tickets) >= 3, "the client did not take fresh tickets after the browser gave up"
    # The new EventSource resumed from the last id the page had applied.
    assert f"lastEventId={applied}" in streams[-1]
    assert alice.errors == []


def test_history_truncated_while_away_reloads_the_conversation(person, rest, cluster):
    """Events the page missed were pruned before it came back: the stream says
    history_truncated, and the page reads the conversation again instead of patching it."""
    api = rest("alice", server=1)
    session = new_session(api, "Pruned while away")
    base = f"/api/v1/sessions/{session['id']}/messages/"
    assert api.post(base, json={"content": "kept from the start"}).status_code == 201
    alice = person("alice", server=0)
    page = alice.page
    loads = []
    page.on("request", lambda r: loads.append(r.url) if r.url.endswith(base) and r.method == "GET" else None)
    alice.open_session(session["id"])
    badge = page.locator("#connection-badge")
    assert len(loads) == 1

    cluster.stop_process(0)
    try:
        expect(badge).to_have_attribute("data-state", "reconnecting", timeout=15_000)
        for n in range(6):
            assert api.post(base, json={"content": f"posted then pruned #{n}"}).status_code == 201
        cluster.manage_script(
            f"from realtime.retention import events_prune\nevents_prune(session_id={session['id']!r}, keep=2)\n"
        )
    finally:
        cluster.restart_process(0)

    expect(badge).to_have_attribute("data-state", "live", timeout=30_000)
    expect(page.get_by_text("posted then pruned #5", exact=True)).to_have_count(1)
    assert len(loads) >= 2, "the conversation was not read again"
    stored = [m["content"] for m in api.get(base).json()["results"]]
    assert page.locator(".message__content").all_text_contents() == stored
    assert alice.errors == []
