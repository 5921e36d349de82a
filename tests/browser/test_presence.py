"""Presence, typing and read positions in real browsers (CONTRACT §7, static/chorus/presence.js):
one context per person, on different server processes, so every signal crosses the cluster."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import WAIT_MS, new_session, screenshot

pytestmark = pytest.mark.services


def dot(page, username: str):
    return page.locator(f'#members [data-presence-dot][data-username="{username}"]')


def test_two_people_see_each_others_presence_and_typing(person, rest):
    api = rest("alice")
    session = new_session(api, "Who is here", editors=("bob", "carol"))
    alice = person("alice", server=0)
    alice.open_session(session["id"])
    # Only alice so far: her own dot, nobody else's.
    expect(dot(alice.page, "alice")).to_have_attribute("data-online", "")
    expect(dot(alice.page, "bob")).not_to_have_attribute("data-online", "")
    bob = person("bob", server=1)
    bob.open_session(session["id"])

    for me, other in ((alice, "bob"), (bob, "alice")):
        expect(dot(me.page, other)).to_have_attribute("data-online", "", timeout=5_000)
        expect(dot(me.page, other)).to_have_attribute("title", "online")
        expect(me.page.locator(f'#members [data-presence-text][data-username="{other}"]')).to_have_text("online")
        expect(me.page.locator("#online-now .avatar")).to_have_count(2)
        expect(dot(me.page, "carol")).not_to_have_attribute("data-online", "")

    # alice types: bob sees it, alice never sees herself; sending ends it at once.
    typing_line = bob.page.locator("#typing-line")
    alice.page.locator("#composer-input").press_sequentially("Shall we ", delay=30)
    expect(typing_line).to_have_text("alice is typing…", timeout=5_000)
    expect(bob.page.locator('#members li.member[data-username="alice"][data-typing]')).to_have_count(1)
    expect(alice.page.locator("#typing-line")).to_have_text("")
    alice.page.locator("#composer-input").press_sequentially("start?", delay=30)
    alice.page.click("button[data-action=send]")
    # Well before the 6 s expiry: the DELETE sent with the message cleared it.
    expect(typing_line).to_have_text("", timeout=3_000)
    expect(bob.page.get_by_text("Shall we start?", exact=True)).to_have_count(1)

    # Two at once, and a notice that is never withdrawn expires after its expiresIn.
    alice.page.locator("#composer-input").press_sequentially("One more", delay=30)
    expect(typing_line).to_have_text("alice is typing…", timeout=5_000)
    assert rest("carol").post(f"/api/v1/sessions/{session['id']}/typing/").status_code == 204
    expect(typing_line).to_have_text("alice and carol are typing…", timeout=5_000)
    shown_at = time.monotonic()
    # alice clears her box: she stopped.
    alice.page.locator("#composer-input").fill("")
    alice.page.locator("#composer-input").dispatch_event("input")
    expect(typing_line).to_have_text("carol is typing…", timeout=3_000)
    expect(typing_line).to_have_text("", timeout=10_000)
    assert time.monotonic() - shown_at > 3, "carol's notice ended long before its expiresIn"

    # bob closes his page: alice sees his dot go off within a few seconds.
    bob.page.close()
    expect(dot(alice.page, "bob")).not_to_have_attribute("data-online", "", timeout=5_000)
    expect(alice.page.locator("#online-now .avatar")).to_have_count(1)
    assert alice.errors == [] and bob.errors == []


def test_the_assistant_types_while_its_answer_runs(person, rest):
    session = new_session(rest("alice"), "Ask away", editors=("bob",))
    alice, bob = person("alice", server=0), person("bob", server=1)
    for someone in (alice, bob):
        someone.open_session(session["id"])
    bob.page.evaluate(
        """() => {
          window.__typing = [];
          const line = document.getElementById('typing-line');
          new MutationObserver(() => window.__typing.push(line.textContent))
            .observe(line, {childList: true, characterData: true, subtree: true});
        }"""
    )
    alice.page.fill("#composer-input", "Summarise the plan in two lines, please.")
    alice.page.click("button[data-action=ask]")
    for someone in (alice, bob):
        expect(someone.page.locator(".message--assistant")).to_have_count(1)
        expect(someone.page.locator(".message--assistant.is-running")).to_have_count(0, timeout=30_000)
        # Its last event ends it (no waiting for the expiry).
        expect(someone.page.locator("#typing-line")).to_have_text("", timeout=3_000)
    assert "the assistant is typing…" in bob.page.evaluate("window.__typing")


def test_new_messages_divider_and_seen_by_follow_the_other_readers(person, rest):
    alice_api, bob_api = rest("alice"), rest("bob", server=1)
    session = new_session(alice_api, "Catching up", editors=("bob",))
    sid = session["id"]
    base = f"/api/v1/sessions/{sid}/messages/"
    assert alice_api.post(base, json={"content": "Read this first."}).status_code == 201
    read = bob_api.put(f"/api/v1/sessions/{sid}/read-position/", json={"lastEventId": 10**6})
    assert read.status_code == 200
    first_new = alice_api.post(base, json={"content": "Then this, while bob was away."}).json()
    assert alice_api.post(base, json={"content": "And this."}).status_code == 201

    alice = person("alice", server=0)
    alice.open_session(sid)
    seen = alice.page.locator("#seen-by")
    expect(seen).to_be_hidden()  # bob's position is before the newest messages
    expect(alice.page.locator(".unread-divider")).to_have_count(0)  # alice wrote them all

    bob = person("bob", server=1)
    bob.open_session(sid)
    # The divider sits right above the first message that arrived after his position...
    divider = bob.page.locator("li.unread-divider")
    expect(divider).to_have_count(1)
    expect(divider).to_have_text("New messages")
    following = bob.page.locator("li.unread-divider + li.message")
    expect(following).to_have_attribute("data-message-id", first_new["id"])
    # ...and, his page being visible with the end in view, it told the others he read them.
    expect(seen).to_be_visible(timeout=5_000)
    expect(seen).to_have_text("Seen by bob")

    # A new message: nobody has seen it, until bob's page applies it and reads it.
    alice.page.evaluate(
        """() => {
          window.__seen = [];
          const line = document.getElementById('seen-by');
          new MutationObserver(() => window.__seen.push(line.hidden ? '' : line.textContent))
            .observe(line, {attributes: true, childList: true, characterData: true, subtree: true});
        }"""
    )
    alice.page.fill("#composer-input", "Fresh news.")
    alice.page.click("button[data-action=send]")
    expect(bob.page.get_by_text("Fresh news.", exact=True)).to_have_count(1)
    expect(seen).to_have_text("Seen by bob", timeout=5_000)
    expect(alice.page.locator(".message").last).to_contain_text("Fresh news.")
    history = alice.page.evaluate("window.__seen")
    assert "" in history and history[-1] == "Seen by bob", history
    # The divider stays until bob leaves.
    expect(divider).to_have_count(1)
    members = {m["username"]: m["lastReadEventId"] for m in bob_api.get(f"/api/v1/sessions/{sid}/").json()["members"]}
    assert members["bob"] == bob_api.get(f"/api/v1/sessions/{sid}/").json()["lastEventId"]
    screenshot(alice.page, "session-seen-by")
    assert alice.errors == [] and bob.errors == []


def test_unread_badge_on_the_list(person, rest):
    alice_api = rest("alice")
    session = new_session(alice_api, "Unread things", editors=("bob",))
    sid = session["id"]
    alice = person("alice")
    page = alice.page
    alice.goto("/")
    card = page.locator(f'.session-card[data-session-id="{sid}"]')
    expect(card).to_have_attribute("data-unread", "0")
    expect(card.locator(".unread-badge")).to_have_count(0)

    assert rest("bob").post(f"/api/v1/sessions/{sid}/messages/", json={"content": "Ping from bob"}).status_code == 201
    page.reload()
    expect(card).to_have_attribute("data-unread", "1")
    expect(card.locator(".unread-badge")).to_contain_text("1")
    screenshot(page, "list-unread")

    # Opening the session reads it: the page PUTs its position.
    with page.expect_response(
        lambda r: r.url.endswith(f"/sessions/{sid}/read-position/") and r.request.method == "PUT", timeout=WAIT_MS
    ) as marked:
        alice.open_session(sid)
        expect(page.get_by_text("Ping from bob", exact=True)).to_have_count(1)
    assert marked.value.status == 200
    alice.goto("/")
    expect(card).to_have_attribute("data-unread", "0")
    expect(card.locator(".unread-badge")).to_have_count(0)
    assert alice.errors == []
