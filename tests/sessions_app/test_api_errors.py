"""Bad input (CONTRACT §3): every refusal is 400/404 (or 405/415) with a JSON `{"detail"}`,
never HTML, and changes nothing: no row written, no event stored, no id consumed."""

import uuid

import pytest
from django.conf import settings

from realtime.models import Event
from sessions_app.models import CollabSession, Membership, Message

pytestmark = pytest.mark.django_db


def snapshot(session) -> dict:
    session.refresh_from_db()
    return {
        "events": Event.objects.count(),
        "last_event_id": session.last_event_id,
        "title": session.title,
        "sessions": CollabSession.objects.count(),
        "memberships": sorted(Membership.objects.values_list("session_id", "user__username", "role")),
        "messages": sorted(Message.objects.values_list("id", "content")),
    }


@pytest.fixture
def unchanged(collab):
    """Asserts at teardown that nothing about the data changed during the test."""
    before = snapshot(collab)
    yield
    assert snapshot(collab) == before


def assert_json_error(response, status: int) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    assert isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in body["detail"]


# Each writing endpoint, called by a user who may write there.
WRITES = {
    "create session": ("post", lambda s: "/api/v1/sessions/", "alice"),
    "rename session": ("patch", lambda s: f"/api/v1/sessions/{s.pk}/", "alice"),
    "add member": ("post", lambda s: f"/api/v1/sessions/{s.pk}/members/", "alice"),
    "post message": ("post", lambda s: f"/api/v1/sessions/{s.pk}/messages/", "bob"),
}


def send(api, request, collab, endpoint: str, body, content_type: str = "application/json"):
    method, url, who = WRITES[endpoint]
    client = api(request.getfixturevalue(who))
    return getattr(client, method)(url(collab), data=body, content_type=content_type)


# --- bodies that are not a JSON object ----------------------------------------------------
@pytest.mark.parametrize("endpoint", list(WRITES))
@pytest.mark.parametrize(
    "raw",
    [
        b'{"title": "x", "content": ',  # cut short
        b"{'title': 'single quotes'}",
        b"not json at all",
        b'{"title": "x",}',
        b"\xff\xfe\x00garbage",  # not UTF-8
        b'{"title": NaN, "content": NaN}',  # not JSON (Python would accept it)
    ],
    ids=["truncated", "single-quotes", "text", "trailing-comma", "not-utf8", "nan"],
)
def test_malformed_json_is_400(api, request, collab, unchanged, endpoint, raw):
    assert_json_error(send(api, request, collab, endpoint, raw), 400)


@pytest.mark.parametrize("endpoint", list(WRITES))
@pytest.mark.parametrize("raw", [b"[]", b'[{"title": "x"}]', b'"a string"', b"42", b"true", b"null"])
def test_json_that_is_not_an_object_is_400(api, request, collab, unchanged, endpoint, raw):
    assert_json_error(send(api, request, collab, endpoint, raw), 400)


@pytest.mark.parametrize("endpoint", list(WRITES))
def test_an_empty_body_is_400(api, request, collab, unchanged, endpoint):
    assert_json_error(send(api, request, collab, endpoint, b""), 400)


@pytest.mark.parametrize("endpoint", list(WRITES))
def test_a_form_body_is_415(api, request, collab, unchanged, endpoint):
    response = send(api, request, collab, endpoint, b"title=x&content=y", "application/x-www-form-urlencoded")
    assert_json_error(response, 415)


# --- wrong types and values ---------------------------------------------------------------
WRONG_VALUES = [42, 1.5, True, None, ["x"], {"x": 1}]


@pytest.mark.parametrize("endpoint", ["create session", "rename session"])
@pytest.mark.parametrize("title", [*WRONG_VALUES, "", "   ", "t" * 201, "nul\x00", "\udfff"], ids=repr)
def test_bad_titles_are_400(api, request, collab, unchanged, endpoint, title):
    response = send(api, request, collab, endpoint, {"title": title})
    assert_json_error(response, 400)
    assert response.json()["detail"].startswith("title")


@pytest.mark.parametrize("content", [*WRONG_VALUES, "", "nul\x00byte", "lone \ud800 surrogate"], ids=repr)
def test_bad_message_content_is_400(api, request, collab, unchanged, content):
    response = send(api, request, collab, "post message", {"content": content})
    assert_json_error(response, 400)
    assert response.json()["detail"].startswith("content")


@pytest.mark.parametrize("reply", ["true", 1, 0, None, "yes"], ids=repr)
def test_reply_must_be_a_boolean(api, request, collab, unchanged, reply):
    response = send(api, request, collab, "post message", {"content": "hi", "reply": reply})
    assert_json_error(response, 400)
    assert response.json()["detail"].startswith("reply")


def test_a_missing_content_is_400(api, request, collab, unchanged):
    assert_json_error(send(api, request, collab, "post message", {"text": "hi"}), 400)


@pytest.mark.parametrize(
    "body",
    [
        {"username": 7, "role": "viewer"},
        {"username": None, "role": "viewer"},
        {"username": ["carol"], "role": "viewer"},
        {"username": "carol", "role": 1},
        {"username": "carol", "role": ["editor"]},
        {"username": "carol", "role": None},
        {"username": "", "role": "viewer"},
        {"username": "x" * 151, "role": "viewer"},
    ],
    ids=repr,
)
def test_bad_member_fields_are_400(api, request, collab, unchanged, body):
    assert_json_error(send(api, request, collab, "add member", body), 400)


# --- over-long content ----------------------------------------------------------------------
def test_content_over_the_limit_is_400(api, request, collab, unchanged):
    content = "x" * (settings.CHORUS_MAX_MESSAGE_CHARS + 1)
    response = send(api, request, collab, "post message", {"content": content})
    assert_json_error(response, 400)
    assert str(settings.CHORUS_MAX_MESSAGE_CHARS) in response.json()["detail"]


def test_content_over_the_limit_in_code_points_is_400(api, request, collab, unchanged):
    content = "👋" * (settings.CHORUS_MAX_MESSAGE_CHARS + 1)
    assert_json_error(send(api, request, collab, "post message", {"content": content}), 400)


def test_content_at_the_limit_is_accepted(api, request, collab):
    content = "👋" * settings.CHORUS_MAX_MESSAGE_CHARS  # counted in code points, not bytes
    response = send(api, request, collab, "post message", {"content": content})
    assert response.status_code == 201
    assert Message.objects.get(pk=response.json()["id"]).content == content


# --- unknown and malformed ids ---------------------------------------------------------------
BAD_SESSION_IDS = [
    str(uuid.UUID(int=1)),
    "not-a-uuid",
    "123",
    "00000000-0000-0000-0000-00000000000g",
    "%20",
]

SESSION_ENDPOINTS = [
    ("get", "{}/", None),
    ("patch", "{}/", {"title": "x"}),
    ("delete", "{}/", None),
    ("post", "{}/members/", {"username": "carol", "role": "viewer"}),
    ("delete", "{}/members/bob/", None),
    ("get", "{}/messages/", None),
    ("post", "{}/messages/", {"content": "x"}),
    ("get", "{}/events/", None),
    ("post", "{}/stream-ticket/", None),
    ("get", "{}/messages/00000000-0000-0000-0000-000000000001/", None),
    ("get", "{}/messages/not-a-uuid/", None),
]


@pytest.mark.parametrize("method, suffix, body", SESSION_ENDPOINTS, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("session_id", BAD_SESSION_IDS)
def test_unknown_or_malformed_session_ids_are_404(api, alice, collab, unchanged, method, suffix, body, session_id):
    url = "/api/v1/sessions/" + suffix.format(session_id)
    response = getattr(api(alice), method)(url, body, format="json")
    assert_json_error(response, 404)


@pytest.mark.parametrize("message_id", [str(uuid.UUID(int=1)), "not-a-uuid"])
@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_unknown_or_malformed_message_ids_are_404(api, alice, collab, unchanged, method, message_id):
    url = f"/api/v1/sessions/{collab.pk}/messages/{message_id}/"
    response = getattr(api(alice), method)(url, {"content": "x"}, format="json")
    assert_json_error(response, 404)


@pytest.mark.parametrize("regeneration_id", [str(uuid.UUID(int=1)), "not-a-uuid", "%00"])
@pytest.mark.parametrize("method, suffix", [("get", ""), ("post", "cancel/")])
def test_unknown_or_malformed_regeneration_ids_are_404(api, alice, collab, unchanged, method, suffix, regeneration_id):
    response = getattr(api(alice), method)(f"/api/v1/regenerations/{regeneration_id}/{suffix}", format="json")
    assert_json_error(response, 404)


def test_an_unknown_api_path_is_a_json_404(api, alice):
    assert_json_error(api(alice).get("/api/v1/no-such-thing/"), 404)


def test_an_unsupported_method_is_a_json_405(api, alice, collab, unchanged):
    assert_json_error(api(alice).put(f"/api/v1/sessions/{collab.pk}/", {"title": "x"}, format="json"), 405)


def test_a_refused_write_by_a_viewer_changes_nothing(api, carol, collab, unchanged):
    response = api(carol).post(f"/api/v1/sessions/{collab.pk}/messages/", {"content": "x"}, format="json")
    assert_json_error(response, 403)


@pytest.mark.parametrize("query", ["?page=2&page=", "?page=true&page=1", "?page=", "?page=x", "?page=-1"])
def test_a_page_parameter_that_is_not_one_page_number_is_refused(api, collab, alice, query):
    response = api(alice).get(f"/api/v1/sessions/{query}")
    assert response.status_code == 404
    assert response.json()["detail"] == "Invalid page."
