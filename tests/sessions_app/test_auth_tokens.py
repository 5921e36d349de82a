"""API tokens (CONTRACT §2): a new hashed, expiring token per sign-in, sent as `Token` or
`Bearer`; logout revokes the token used, logout-all every token of the caller."""

import datetime as dt
import io
import re

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from knox.crypto import hash_token
from knox.models import AuthToken
from rest_framework.test import APIClient

from sessions_app.tokens import token_issue

pytestmark = pytest.mark.django_db

TOKEN = "/api/v1/auth/token/"
LOGOUT = "/api/v1/auth/logout/"
LOGOUT_ALL = "/api/v1/auth/logout-all/"
SESSIONS = "/api/v1/sessions/"
PASSWORD = "pw-for-tests"


def sign_in(username: str = "alice") -> dict:
    response = APIClient().post(TOKEN, {"username": username, "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def client_with(token: str, scheme: str = "Token") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {token}")
    return client


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- obtaining --------------------------------------------------------------------------
def test_sign_in_answers_a_token_and_when_it_expires(alice, settings):
    before = timezone.now()
    body = sign_in()
    assert set(body) == {"token", "expiresAt"}
    expires = parse_time(body["expiresAt"])
    assert expires.tzinfo is not None
    ttl = dt.timedelta(seconds=settings.CHORUS_TOKEN_TTL_SECONDS)
    assert settings.CHORUS_TOKEN_TTL_SECONDS == 30 * 24 * 3600
    assert before + ttl <= expires <= timezone.now() + ttl


def test_every_sign_in_is_a_new_token_and_all_of_them_work(alice):
    tokens = {sign_in()["token"] for _ in range(3)}
    assert len(tokens) == 3
    for token in tokens:
        assert client_with(token).get(SESSIONS).status_code == 200
    assert AuthToken.objects.filter(user=alice).count() == 3


def test_tokens_are_stored_hashed_never_in_clear(alice):
    token = sign_in()["token"]
    row = AuthToken.objects.get(user=alice)
    assert row.digest == hash_token(token) != token
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {AuthToken._meta.db_table}")
        stored = [str(value) for value in cursor.fetchall()[0]]
    assert token not in stored
    assert not any(token in value for value in stored)


@pytest.mark.parametrize("scheme", ["Token", "Bearer", "token", "bearer"])
def test_both_schemes_authenticate(alice, scheme):
    assert client_with(sign_in()["token"], scheme).get(SESSIONS).status_code == 200


def test_the_lifetime_follows_the_setting(alice, settings):
    settings.CHORUS_TOKEN_TTL_SECONDS = 60
    expires = parse_time(sign_in()["expiresAt"])
    assert dt.timedelta(seconds=55) < expires - timezone.now() <= dt.timedelta(seconds=60)


def test_an_expired_token_is_401(alice):
    token = sign_in()["token"]
    AuthToken.objects.filter(user=alice).update(expiry=timezone.now() - dt.timedelta(seconds=1))
    response = client_with(token).get(SESSIONS)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}
    assert response["WWW-Authenticate"] == "Token"


def test_a_token_just_before_expiry_still_works(alice):
    token = sign_in()["token"]
    AuthToken.objects.filter(user=alice).update(expiry=timezone.now() + dt.timedelta(seconds=30))
    assert client_with(token).get(SESSIONS).status_code == 200


def test_signing_in_clears_the_users_expired_tokens(alice, bob):
    old, _ = token_issue(user=alice)
    others, _ = token_issue(user=bob)
    AuthToken.objects.filter(pk__in=[old.pk, others.pk]).update(expiry=timezone.now() - dt.timedelta(days=1))
    sign_in()
    assert not AuthToken.objects.filter(pk=old.pk).exists()
    assert AuthToken.objects.filter(pk=others.pk).exists()  # someone else's: left alone


@pytest.mark.parametrize(
    "token",
    ["x", "0" * 64, "not a token at all but long enough to have a key prefix", "é" * 70],
)
def test_made_up_tokens_are_401(alice, token):
    sign_in()
    response = client_with(token).get(SESSIONS)
    assert response.status_code == 401
    assert response.json()["detail"]


def test_a_token_with_the_right_prefix_but_a_wrong_rest_is_401(alice):
    token = sign_in()["token"]
    forged = token[:15] + ("0" if token[15] != "0" else "1") + token[16:]
    assert client_with(forged).get(SESSIONS).status_code == 401


def test_a_token_of_a_deactivated_user_is_401(alice):
    client = client_with(sign_in()["token"])
    alice.is_active = False
    alice.save()
    response = client.get(SESSIONS)
    assert response.status_code == 401
    assert response.json() == {"detail": "User inactive or deleted."}


def test_authentication_is_one_query_for_the_token_and_its_user(alice):
    from django.test.utils import CaptureQueriesContext

    client = client_with(sign_in()["token"])
    with CaptureQueriesContext(connection) as queries:
        assert client.get(SESSIONS).status_code == 200
    about_tokens = [q["sql"] for q in queries.captured_queries if AuthToken._meta.db_table in q["sql"]]
    assert len(about_tokens) == 1
    assert "JOIN" in about_tokens[0] and "auth_user" in about_tokens[0]
    assert not any(
        q["sql"].lstrip().upper().startswith(("UPDATE", "DELETE", "INSERT")) for q in queries.captured_queries
    )


# --- logout -----------------------------------------------------------------------------
def test_logout_revokes_only_the_token_used(alice):
    phone, laptop = sign_in()["token"], sign_in()["token"]
    response = client_with(phone).post(LOGOUT)
    assert response.status_code == 204
    assert response.content == b""
    assert client_with(phone).get(SESSIONS).status_code == 401
    assert client_with(laptop).get(SESSIONS).status_code == 200


def test_logout_with_a_bearer_token(alice):
    token = sign_in()["token"]
    assert client_with(token, "Bearer").post(LOGOUT).status_code == 204
    assert client_with(token).get(SESSIONS).status_code == 401


def test_logout_all_revokes_every_token_of_the_caller_and_no_one_elses(alice, bob):
    mine = [sign_in()["token"] for _ in range(3)]
    bobs = sign_in("bob")["token"]
    assert client_with(mine[0]).post(LOGOUT_ALL).status_code == 204
    for token in mine:
        assert client_with(token).get(SESSIONS).status_code == 401
    assert client_with(bobs).get(SESSIONS).status_code == 200
    assert not AuthToken.objects.filter(user=alice).exists()


def test_logout_needs_a_token(alice):
    response = APIClient().post(LOGOUT)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert client_with("made-up-token-made-up-token").post(LOGOUT).status_code == 401


def test_logout_with_only_a_session_cookie_is_401_as_there_is_no_token_to_revoke(alice):
    client = APIClient()
    client.force_login(alice)
    assert client.post(LOGOUT).status_code == 401


def test_logout_all_from_the_web_app_needs_the_csrf_token(alice):
    token = sign_in()["token"]
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    assert browser.post(LOGOUT_ALL, content_type="application/json").status_code == 403  # no CSRF token
    assert client_with(token).get(SESSIONS).status_code == 200
    browser.get("/accounts/login/")  # sets the csrftoken cookie
    csrf = browser.cookies["csrftoken"].value
    assert browser.post(LOGOUT_ALL, content_type="application/json", HTTP_X_CSRFTOKEN=csrf).status_code == 204
    assert client_with(token).get(SESSIONS).status_code == 401


def test_a_revoked_token_cannot_log_out_again(alice):
    token = sign_in()["token"]
    assert client_with(token).post(LOGOUT).status_code == 204
    assert client_with(token).post(LOGOUT).status_code == 401


# --- the plain tokens of before ---------------------------------------------------------
def test_drfs_plain_token_table_is_gone():
    """Migrated knowingly: DRF's clear-text tokens were dropped, not converted
    (sessions_app/migrations/0003_drop_plain_api_tokens.py)."""
    assert "authtoken_token" not in connection.introspection.table_names()
    assert AuthToken._meta.db_table in connection.introspection.table_names()


# --- the admin and the demo data --------------------------------------------------------
@pytest.fixture
def admin_browser(staff_user) -> Client:
    staff_user.is_superuser = True
    staff_user.save()
    browser = Client()
    browser.force_login(staff_user)
    return browser


def test_the_admin_lists_tokens_without_their_secret(alice, admin_browser):
    token = sign_in()["token"]
    browser = admin_browser
    page = browser.get("/admin/knox/authtoken/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "alice" in html
    row = AuthToken.objects.get(user=alice)
    assert row.digest[:12] in html  # a fingerprint tells rows apart
    # Not even the token's lookup prefix (the digest, in links, reveals nothing of it).
    assert token[:15] not in html
    detail = browser.get(f"/admin/knox/authtoken/{row.pk}/change/").content.decode()
    assert token[:15] not in detail
    assert browser.get("/admin/knox/authtoken/add/").status_code == 403


def test_the_admin_revokes_tokens(alice, admin_browser):
    token = sign_in()["token"]
    browser = admin_browser
    row = AuthToken.objects.get(user=alice)
    response = browser.post("/admin/knox/authtoken/", {"action": "revoke", "_selected_action": [row.pk]}, follow=True)
    assert response.status_code == 200
    assert "Revoked 1 token(s)." in response.content.decode()
    assert client_with(token).get(SESSIONS).status_code == 401


def test_seed_demo_prints_usable_tokens():
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    printed = dict(re.findall(r"(\w+): Authorization: Token (\w+)", out.getvalue()))
    assert set(printed) == {"alice", "bob"}
    for username, token in printed.items():
        response = client_with(token).get(SESSIONS)
        assert response.status_code == 200
        assert response.json()["count"] == 1, username
