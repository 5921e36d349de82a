"""The session page in a real browser: live tokens for every member, roles, escaping,
access, and screenshots at desktop and phone widths."""

from __future__ import annotations

import itertools

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import WAIT_MS, new_session, screenshot, sign_in

pytestmark = pytest.mark.services

HOSTILE = "<img src=x onerror=alert(1)>"

# Records every text the newest assistant message shows, in the page itself: each page's
# own observation of the tokens arriving, not a poll that could skip or merge them.
RECORD_ASSISTANT_TEXT = """
() => {
  window.__texts = {};
  window.__sawProgress = false;
  window.__sawCancel = false;
  const observer = new MutationObserver(() => {
    if (document.querySelector('.message--assistant .message__progress progress')) window.__sawProgress = true;
    if (document.querySelector('.message--assistant .message__actions .button--danger')) window.__sawCancel = true;
    for (const node of document.querySelectorAll('.message--assistant')) {
      const content = node.querySelector('.message__content');
      if (!content) continue;
      const seen = (window.__texts[node.dataset.messageId] ||= []);
      if (seen[seen.length - 1] !== content.textContent) seen.push(content.textContent);
    }
  });
  observer.observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
}
"""


def assistant_messages(api, session_id: str) -> list[dict]:
    messages = api.get(f"/api/v1/sessions/{session_id}/messages/").json()["results"]
    return [m for m in messages if m["role"] == "assistant"]


def test_both_members_see_the_answer_grow_token_by_token(person, rest):
    api = rest("alice")
    session = new_session(api, "Launch planning", editors=("bob",))
    alice, bob = person("alice"), person("bob")
    for someone in (alice, bob):
        someone.open_session(session["id"])
        someone.page.evaluate(RECORD_ASSISTANT_TEXT)

    alice.page.fill("#composer-input", "How should we plan the launch of the onboarding flow?")
    alice.page.click("button[data-action=ask]")

    for someone in (alice, bob):
        page = someone.page
        expect(page.locator(".message--assistant")).to_have_count(1, timeout=WAIT_MS)
        expect(page.locator(".message--assistant.is-running")).to_have_count(0, timeout=30_000)
        expect(page.get_by_text("How should we plan the launch of the onboarding flow?", exact=True)).to_have_count(1)
        # While it ran: a progress bar and Cancel; after: the thought steps, collapsed, and Regenerate.
        assert page.evaluate("window.__sawProgress && window.__sawCancel")
        expect(page.locator(".message--assistant details.thoughts summary")).to_have_text("Thought process · 2 steps")
        assert page.locator(".message--assistant details.thoughts[open]").count() == 0
        expect(page.get_by_role("button", name="Regenerate")).to_have_count(1)

    [answer] = assistant_messages(api, session["id"])
    final = answer["content"]
    assert len(final) > 40
    seen = {}
    for someone in (alice, bob):
        texts = someone.page.evaluate("(id) => window.__texts[id] || []", answer["id"])
        shown = someone.page.locator(f'[data-message-id="{answer["id"]}"] .message__content').text_content()
        assert shown == final, f"{someone.name} shows a different final text"
        # Token by token: many growing prefixes of the final text, never a doubled piece.
        growing = [t for t in texts if t]
        assert len(growing) >= 5, f"{someone.name} saw the answer in {len(growing)} steps: {growing}"
        for before, after in itertools.pairwise(growing):
            assert after.startswith(before) and len(after) > len(before)
        assert all(final.startswith(text) for text in growing)
        seen[someone.name] = growing
        assert someone.errors == [] and someone.dialogs == []
    # Both watched the same answer arrive (the same prefixes, however the frames were batched).
    assert set(seen["alice"]) & set(seen["bob"]), "the two members saw no common intermediate text"
    screenshot(alice.page, "session-answer-alice")


def test_viewer_has_no_composer_and_no_write_actions(person, rest):
    api = rest("alice")
    session = new_session(api, "Read along", viewers=("carol",))
    message = api.post(
        f"/api/v1/sessions/{session['id']}/messages/", json={"content": "Viewers can read this.", "reply": True}
    )
    assert message.status_code == 201
    carol = person("carol")
    carol.open_session(session["id"])
    page = carol.page
    expect(page.get_by_text("Viewers can read this.", exact=True)).to_be_visible()
    expect(page.locator(".message--assistant")).to_have_count(1)
    expect(page.locator(".message--assistant.is-running")).to_have_count(0, timeout=30_000)
    assert page.locator("#composer").count() == 0
    assert page.locator("textarea").count() == 0
    assert page.get_by_role("button", name="Ask the assistant").count() == 0
    assert page.locator(".message__actions button").count() == 0  # no Regenerate, Edit, Delete, Cancel
    expect(page.locator(".readonly-note")).to_be_visible()
    assert carol.errors == []


def test_hostile_title_and_message_render_as_text(person, rest):
    api = rest("alice")
    session = new_session(api, HOSTILE, editors=("bob",))
    posted = api.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": HOSTILE})
    assert posted.status_code == 201
    alice = person("alice")
    page = alice.page

    alice.goto("/")
    expect(page.locator(".session-card__title", has_text=HOSTILE)).to_have_count(1)
    assert page.locator("img").count() == 0

    alice.open_session(session["id"])
    expect(page.locator("#session-title")).to_have_text(HOSTILE)
    expect(page.locator(".message__content", has_text=HOSTILE)).to_have_count(1)
    # The same text arriving live, through the stream, from another member.
    bob_api = rest("bob", server=1)
    live = bob_api.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": "live " + HOSTILE})
    assert live.status_code == 201
    expect(page.locator(".message__content", has_text="live " + HOSTILE)).to_have_count(1)
    renamed = api.patch(f"/api/v1/sessions/{session['id']}/", json={"title": HOSTILE + " (renamed)"})
    assert renamed.status_code == 200
    expect(page.locator("#session-title")).to_have_text(HOSTILE + " (renamed)")

    assert page.locator("img").count() == 0
    assert alice.dialogs == [], "a dialog fired: markup was executed"
    assert alice.errors == []


def test_non_member_gets_404_without_the_title(person, rest):
    session = new_session(rest("alice"), "Secret plans")
    mallory = person("mallory")
    response = mallory.goto(f"/sessions/{session['id']}/")
    assert response.status == 404
    assert "Secret plans" not in mallory.page.content()


def test_anonymous_is_sent_to_login_and_the_form_lands_on_the_list(person, cluster):
    visitor = person("alice", sign=False)
    page = visitor.page
    visitor.goto("/")
    assert page.url == cluster.urls[0] + "/accounts/login/?next=/"
    expect(page.get_by_role("heading", name="Sign in to Chorus")).to_be_visible()
    sign_in(page, cluster.urls[0], "alice")
    assert page.url == cluster.urls[0] + "/"
    expect(page.get_by_role("heading", name="Your sessions")).to_be_visible()
    # The logout button signs out and shows the login page again.
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(cluster.urls[0] + "/accounts/login/", timeout=WAIT_MS)


def test_create_a_session_from_the_list(person):
    alice = person("alice")
    page = alice.page
    page.fill("#id_title", "Made in the browser")
    page.get_by_role("button", name="Create session").click()
    expect(page.locator("#session-title")).to_have_text("Made in the browser")
    expect(page.locator("#connection-badge")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(page.locator("#members li")).to_have_count(1)


def test_a_page_opened_mid_answer_shows_it_once(person, rest):
    """The page's REST load already holds part of the answer and the stream replays the
    deltas before it: applied by offset, the text is never doubled."""
    api = rest("alice")
    session = new_session(api, "Late joiner", editors=("bob",))
    posted = api.post(
        f"/api/v1/sessions/{session['id']}/messages/", json={"content": "Plan the offsite agenda", "reply": True}
    )
    assert posted.status_code == 201
    regeneration = f"/api/v1/regenerations/{posted.json()['regenerationId']}/"
    bob = person("bob")
    # Wait (with a bound) until some of the answer is stored, then open the page mid-answer.
    bob.page.wait_for_function(
        "async (url) => { const r = await fetch(url); return (await r.json()).content.length > 20; }",
        arg=regeneration,
        polling=100,
        timeout=WAIT_MS,
    )
    bob.open_session(session["id"])
    page = bob.page
    expect(page.locator(".message--assistant")).to_have_count(1)
    expect(page.locator(".message--assistant.is-running")).to_have_count(0, timeout=30_000)
    final = api.get(regeneration).json()
    assert final["status"] == "completed"
    expect(page.locator(".message--assistant .message__content")).to_have_text(final["content"])
    assert bob.errors == []


def test_edit_and_delete_reach_the_other_member(person, rest):
    api = rest("alice")
    session = new_session(api, "Edits", editors=("bob",))
    alice, bob = person("alice"), person("bob")
    for someone in (alice, bob):
        someone.open_session(session["id"])
    alice.page.fill("#composer-input", "first draft")
    alice.page.click("button[data-action=send]")
    expect(bob.page.get_by_text("first draft", exact=True)).to_have_count(1)
    # bob may not change alice's message; alice (author and owner) may.
    assert bob.page.locator(".message__actions button").count() == 0
    message_id = alice.page.locator(".message", has_text="first draft").get_attribute("data-message-id")
    mine = alice.page.locator(f'[data-message-id="{message_id}"]')  # its text becomes the editor's value
    mine.get_by_role("button", name="Edit").click()
    mine.locator("textarea").fill("second draft")
    mine.get_by_role("button", name="Save").click()
    expect(bob.page.get_by_text("second draft", exact=True)).to_have_count(1)
    expect(bob.page.locator(".message__meta")).to_contain_text("edited")
    mine.get_by_role("button", name="Delete").click()
    mine.get_by_role("button", name="Delete for everyone").click()
    expect(bob.page.locator(".message")).to_have_count(0)
    expect(alice.page.locator(".message")).to_have_count(0)
    assert alice.dialogs == [] and alice.errors == [] and bob.errors == []


def test_regenerate_then_cancel_is_seen_by_both(person, rest):
    api = rest("alice")
    session = new_session(api, "Regenerations", editors=("bob",))
    alice, bob = person("alice"), person("bob")
    posted = api.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": "Name our team", "reply": True})
    assert posted.status_code == 201
    for someone in (alice, bob):
        someone.open_session(session["id"])
        expect(someone.page.locator(".message--assistant.is-running")).to_have_count(0, timeout=30_000)
    alice.page.get_by_role("button", name="Regenerate").click()
    # A new version starts streaming in both pages; bob cancels it.
    for someone in (alice, bob):
        expect(someone.page.locator(".message--assistant")).to_have_count(2)
        expect(someone.page.locator(".message--assistant").nth(1)).to_contain_text("new version")
    cancel = bob.page.locator(".message--assistant").nth(1).get_by_role("button", name="Cancel")
    cancel.click()
    for someone in (alice, bob):
        newest = someone.page.locator(".message--assistant").nth(1)
        expect(newest.locator(".message__problem--cancelled")).to_have_text("Cancelled.")
        expect(newest).not_to_have_class("is-running")
    assert alice.errors == [] and bob.errors == []


def test_removed_member_is_told_and_loses_the_composer(person, rest):
    api = rest("alice")
    session = new_session(api, "Access", editors=("bob",))
    bob = person("bob")
    bob.open_session(session["id"])
    expect(bob.page.locator("#composer")).to_have_count(1)
    assert api.delete(f"/api/v1/sessions/{session['id']}/members/bob/").status_code == 204
    expect(bob.page.locator(".alert--revoked")).to_contain_text("no longer have access", timeout=WAIT_MS)
    expect(bob.page.locator("#connection-badge")).to_have_attribute("data-state", "offline")
    assert bob.page.locator("#composer").count() == 0
    assert bob.errors == []


def test_system_notice_is_shown(person, rest, cluster):
    session = new_session(rest("alice"), "Notices")
    alice = person("alice")
    alice.open_session(session["id"])
    cluster.manage_script(
        "from realtime import events\n"
        "from realtime.publish import event_publish\n"
        f"event_publish(session_id={session['id']!r}, payload=events.system(message={HOSTILE!r}))\n"
    )
    expect(alice.page.locator(".notice .notice__text")).to_have_text(HOSTILE, timeout=WAIT_MS)
    assert alice.page.locator("img").count() == 0 and alice.dialogs == []


# The badge's box, whether it lies inside the viewport, and whether it is what the page
# shows at its centre (nothing drawn over it).
BADGE_IN_VIEW = """
() => {
  const badge = document.getElementById("connection-badge");
  const box = badge.getBoundingClientRect();
  const inside = box.top >= 0 && box.left >= 0 && box.bottom <= innerHeight && box.right <= innerWidth;
  const atCentre = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
  return { inside, onTop: badge.contains(atCentre), bottom: box.bottom };
}
"""


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_the_connection_badge_stays_in_view_at_the_end_of_a_long_conversation(person, rest, viewport):
    from tests.browser.conftest import DESKTOP, PHONE

    api = rest("alice")
    session = new_session(api, "A long conversation")
    for n in range(40):
        text = f"Message {n}: " + "a line of conversation " * 6
        assert api.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": text}).status_code == 201
    alice = person("alice", viewport=DESKTOP if viewport == "desktop" else PHONE)
    alice.open_session(session["id"])
    page = alice.page
    expect(page.locator(".message")).to_have_count(40)
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_function("() => scrollY > 0 && Math.ceil(scrollY + innerHeight) >= document.body.scrollHeight")
    badge = page.evaluate(BADGE_IN_VIEW)
    assert badge["inside"] and badge["onTop"], badge
    # It covers no message: the newest one is wholly below it, where scrolling brought it.
    last = page.locator(".message").last.bounding_box()
    assert last["y"] >= badge["bottom"], (last, badge)
    screenshot(page, f"session-{viewport}-scrolled")
