"""Sessions over REST (CONTRACT §3): create, list, retrieve, update, delete, token login."""

import datetime as dt

import pytest

from realtime.models import Event
from sessions_app import services
from sessions_app.models import CollabSession, Membership

pytestmark = pytest.mark.django_db

SESSIONS = "/api/v1/sessions/"


def detail(session) -> str:
    return f"{SESSIONS}{session.pk}/"


def events_of(session) -> list[tuple[int, str, dict]]:
    return list(Event.objects.filter(session=session).order_by("seq").values_list("seq", "type", "data"))


# --- token login ------------------------------------------------------------------------
def test_token_login_returns_a_token_that_authenticates(api, alice):
    response = api().post("/api/v1/auth/token/", {"username": "alice", "password": "pw-for-tests"}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    assert isinstance(token, str) and token
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get(SESSIONS).status_code == 200


def test_a_bearer_token_authenticates_as_openai_sdks_send_it(api, alice):
    token = api().post("/api/v1/auth/token/", {"username": "alice", "password": "pw-for-tests"}).json()["token"]
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get(SESSIONS).status_code == 200
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert client.get(SESSIONS).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"username": "alice", "password": "wrong"},
        {"username": "nobody", "password": "pw-for-tests"},
        {"username": "alice"},
        {},
    ],
)
def test_token_login_with_bad_credentials_is_400_json(api, alice, body):
    response = api().post("/api/v1/auth/token/", body, format="json")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]
    assert "token" not in response.json()


def test_token_login_refuses_an_inactive_user(api, alice):
    alice.is_active = False
    alice.save()
    response = api().post("/api/v1/auth/token/", {"username": "alice", "password": "pw-for-tests"}, format="json")
    assert response.status_code == 400
    assert "detail" in response.json()


def test_an_unknown_token_is_401(api, alice):
    client = api()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get(SESSIONS)
    assert response.status_code == 401
    assert "detail" in response.json()


# --- create -----------------------------------------------------------------------------
def test_create_makes_the_caller_owner_and_emits_member_joined(api, alice):
    response = api(alice).post(SESSIONS, {"title": "Roadmap"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "title", "owner", "role", "createdAt", "lastEventId", "members"}
    assert body["title"] == "Roadmap"
    assert body["owner"] == "alice"
    assert body["role"] == "owner"
    assert body["members"] == [{"username": "alice", "role": "owner", "lastReadEventId": 0}]
    session = CollabSession.objects.get(pk=body["id"])
    assert session.owner == alice
    assert body["lastEventId"] == session.last_event_id == 1
    assert events_of(session) == [(1, "member_joined", {"username": "alice", "role": "owner"})]
    created = dt.datetime.fromisoformat(body["createdAt"].replace("Z", "+00:00"))
    assert created.tzinfo is not None


def test_create_requires_credentials(api):
    response = api().post(SESSIONS, {"title": "x"}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")
    assert "detail" in response.json()
    assert not CollabSession.objects.exists()


# --- list -------------------------------------------------------------------------------
def test_list_has_only_the_callers_sessions_as_a_page(api, collab, alice, outsider):
    services.session_create(owner=outsider, title="Private")
    body = api(alice).get(SESSIONS).json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 1 and body["next"] is None and body["previous"] is None
    assert [s["id"] for s in body["results"]] == [str(collab.pk)]
    assert body["results"][0]["role"] == "owner"


def test_list_shows_each_member_their_own_role(api, collab, bob, carol):
    assert api(bob).get(SESSIONS).json()["results"][0]["role"] == "editor"
    assert api(carol).get(SESSIONS).json()["results"][0]["role"] == "viewer"


def test_list_is_paginated(api, alice):
    for i in range(51):
        services.session_create(owner=alice, title=f"s{i}")
    first = api(alice).get(SESSIONS).json()
    assert first["count"] == 51
    assert len(first["results"]) == 50
    assert first["next"] and first["previous"] is None
    second = api(alice).get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None and second["previous"]
    ids = [s["id"] for s in first["results"] + second["results"]]
    assert len(set(ids)) == 51


def test_list_of_a_user_without_sessions_is_empty(api, collab, outsider):
    assert api(outsider).get(SESSIONS).json() == {"count": 0, "next": None, "previous": None, "results": []}


def test_list_requires_credentials(api):
    assert api().get(SESSIONS).status_code == 401


# --- retrieve ---------------------------------------------------------------------------
def test_retrieve_carries_members_role_and_last_event_id(api, collab, alice, bob):
    services.message_create(session=collab, author=bob, content="hi")
    collab.refresh_from_db()
    body = api(bob).get(detail(collab)).json()
    assert body["id"] == str(collab.pk)
    assert body["title"] == "Planning"
    assert body["owner"] == "alice"
    assert body["role"] == "editor"
    assert body["lastEventId"] == collab.last_event_id == 4
    assert body["members"] == [
        {"username": "alice", "role": "owner", "lastReadEventId": 0},
        {"username": "bob", "role": "editor", "lastReadEventId": 0},
        {"username": "carol", "role": "viewer", "lastReadEventId": 0},
    ]


def test_staff_who_is_not_a_member_can_read_with_no_role(api, collab, staff_user):
    response = api(staff_user).get(detail(collab))
    assert response.status_code == 200
    assert response.json()["role"] is None


def test_non_member_gets_404_not_403(api, collab, outsider):
    response = api(outsider).get(detail(collab))
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


# --- update -----------------------------------------------------------------------------
def test_owner_renames_and_session_updated_is_emitted(api, collab, alice):
    before = collab.last_event_id
    response = api(alice).patch(detail(collab), {"title": "Renamed"}, format="json")
    assert response.status_code == 200
    assert response.json()["title"] == "Renamed"
    assert response.json()["lastEventId"] == before + 1
    collab.refresh_from_db()
    assert collab.title == "Renamed"
    assert events_of(collab)[-1] == (before + 1, "session_updated", {"title": "Renamed"})


@pytest.mark.parametrize("who, status", [("bob", 403), ("carol", 403), ("outsider", 404), ("staff_user", 403)])
def test_only_the_owner_renames(api, collab, request, who, status):
    before = collab.last_event_id
    response = api(request.getfixturevalue(who)).patch(detail(collab), {"title": "Nope"}, format="json")
    assert response.status_code == status
    assert "detail" in response.json()
    collab.refresh_from_db()
    assert collab.title == "Planning"
    assert collab.last_event_id == before


# --- delete -----------------------------------------------------------------------------
def test_owner_deletes_with_204(api, collab, alice, bob):
    services.message_create(session=collab, author=bob, content="gone soon")
    response = api(alice).delete(detail(collab))
    assert response.status_code == 204
    assert not response.content
    assert not CollabSession.objects.filter(pk=collab.pk).exists()
    assert not Event.objects.filter(session_id=collab.pk).exists()
    assert not Membership.objects.filter(session_id=collab.pk).exists()
    assert api(alice).get(detail(collab)).status_code == 404


@pytest.mark.parametrize("who, status", [("bob", 403), ("carol", 403), ("outsider", 404), ("staff_user", 403)])
def test_only_the_owner_deletes(api, collab, request, who, status):
    response = api(request.getfixturevalue(who)).delete(detail(collab))
    assert response.status_code == status
    assert CollabSession.objects.filter(pk=collab.pk).exists()


def test_delete_requires_credentials(api, collab):
    assert api().delete(detail(collab)).status_code == 401
    assert CollabSession.objects.filter(pk=collab.pk).exists()


# --- session-cookie clients (the web app) -------------------------------------------------
def cookie_client(user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    assert client.login(username=user.username, password="pw-for-tests")
    return client


def test_a_session_cookie_reads_the_api(collab, alice):
    response = cookie_client(alice).get(SESSIONS)
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_a_session_cookie_needs_the_csrf_token_to_write(alice):
    client = cookie_client(alice)
    refused = client.post(SESSIONS, {"title": "No CSRF"}, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert not CollabSession.objects.exists()
    client.get("/accounts/login/")  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    accepted = client.post(SESSIONS, {"title": "With CSRF"}, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201


def test_logging_in_in_a_browser_lands_on_a_page_that_exists(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-for-tests"}, follow=True)
    assert response.redirect_chain[0][1] == 302
    assert response.status_code == 200
    assert response.request["PATH_INFO"] == "/"  # the session list (CONTRACT §2)
