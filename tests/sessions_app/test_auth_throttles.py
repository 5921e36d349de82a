"""Signing in is throttled per client address and per username (CONTRACT §2): the API
answers 429 with Retry-After, the login form shows an error and answers 429."""

import pytest
from django.conf import settings as django_settings
from django.test import Client
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

TOKEN = "/api/v1/auth/token/"
LOGIN = "/accounts/login/"
PASSWORD = "pw-for-tests"


def obtain(username: str, password: str = PASSWORD, *, address: str = "10.0.0.1"):
    return APIClient(REMOTE_ADDR=address).post(TOKEN, {"username": username, "password": password}, format="json")


def login_form(username: str, password: str = PASSWORD, *, address: str = "10.0.0.1") -> tuple:
    browser = Client(REMOTE_ADDR=address)
    return browser, browser.post(LOGIN, {"username": username, "password": password})


def test_the_default_rates():
    assert django_settings.CHORUS_LOGIN_RATE_IP == "20/minute"
    assert django_settings.CHORUS_LOGIN_RATE_USER == "10/minute"


# --- the API ----------------------------------------------------------------------------
def test_token_requests_from_one_address_are_throttled(alice, settings):
    settings.CHORUS_LOGIN_RATE_IP = "3/minute"
    for name in ("nobody-1", "nobody-2", "nobody-3"):
        assert obtain(name).status_code == 400
    refused = obtain("alice")  # the right password, from the same address
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert refused["Content-Type"].startswith("application/json")
    assert "throttled" in refused.json()["detail"].lower()
    assert "token" not in refused.json()
    assert obtain("alice", address="10.0.0.2").status_code == 200  # another address


def test_token_requests_for_one_username_are_throttled_from_any_address(alice, bob, settings):
    settings.CHORUS_LOGIN_RATE_USER = "2/minute"
    assert obtain("alice", "wrong", address="10.0.0.1").status_code == 400
    assert obtain("ALICE ", "wrong", address="10.0.0.2").status_code == 400  # same name, told apart by case
    refused = obtain("alice", address="10.0.0.3")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert obtain("bob", address="10.0.0.3").status_code == 200  # another username


def test_an_unknown_username_is_throttled_like_a_known_one(alice, settings):
    """Otherwise the throttle would tell which usernames exist."""
    settings.CHORUS_LOGIN_RATE_USER = "1/minute"
    assert obtain("ghost", address="10.0.0.1").status_code == 400
    assert obtain("ghost", address="10.0.0.2").status_code == 429


def test_a_bad_body_counts_against_the_address(alice, settings):
    settings.CHORUS_LOGIN_RATE_IP = "1/minute"
    assert APIClient(REMOTE_ADDR="10.0.0.9").post(TOKEN, ["not", "an", "object"], format="json").status_code == 400
    assert obtain("alice", address="10.0.0.9").status_code == 429


# --- the login form ---------------------------------------------------------------------
def test_the_login_form_is_throttled_per_username(alice, settings):
    settings.CHORUS_LOGIN_RATE_USER = "2/minute"
    for address in ("10.0.0.1", "10.0.0.2"):
        _, response = login_form("alice", "wrong", address=address)
        assert response.status_code == 200
        assert b"Too many sign-in attempts" not in response.content
    browser, response = login_form("alice", address="10.0.0.3")  # the right password
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    page = response.content.decode()
    assert "Too many sign-in attempts. Try again in" in page
    assert "<form" in page  # the form again, to try later
    assert django_settings.SESSION_COOKIE_NAME not in browser.cookies  # not signed in
    assert browser.get("/api/v1/sessions/").status_code in (401, 403)


def test_the_login_form_is_throttled_per_address(alice, bob, settings):
    settings.CHORUS_LOGIN_RATE_IP = "2/minute"
    assert login_form("nobody", "x")[1].status_code == 200
    assert login_form("nobody-else", "x")[1].status_code == 200
    assert login_form("bob")[1].status_code == 429
    assert login_form("bob", address="10.0.0.2")[1].status_code == 302  # another address signs in


def test_the_form_and_the_api_share_the_count(alice, settings):
    settings.CHORUS_LOGIN_RATE_USER = "2/minute"
    assert login_form("alice", "wrong")[1].status_code == 200
    assert obtain("alice", "wrong", address="10.0.0.2").status_code == 400
    assert obtain("alice", address="10.0.0.3").status_code == 429
    assert login_form("alice", address="10.0.0.4")[1].status_code == 429


def test_signing_in_under_the_limits_works(alice):
    _, response = login_form("alice")
    assert response.status_code == 302
    assert obtain("alice").status_code == 200
