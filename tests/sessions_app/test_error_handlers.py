"""Error responses (sessions_app.exceptions): API paths answer JSON, with DEBUG on (as
under `make run`) or off, and never leak a traceback, a setting or an exception's text;
pages get the HTML pages of templates/. `/v1/` answers OpenAI's error shape."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import path

from sessions_app import selectors

pytestmark = pytest.mark.django_db

SECRET_TEXT = "s3cret-exception-text"
LEAKS = ["Traceback", "SECRET_KEY", SECRET_TEXT, "django", "<html", "urlpatterns", 'File "']


@pytest.fixture(params=[True, False], ids=["debug", "no-debug"])
def debug(request, settings):
    settings.DEBUG = request.param
    return request.param


@pytest.fixture
def quiet_client() -> Client:
    """A client that returns 500 responses instead of re-raising the view's exception."""
    return Client(raise_request_exception=False)


def assert_clean_json(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    text = response.content.decode()
    for leak in LEAKS:
        assert leak not in text, leak
    return response.json()


# --- unknown paths ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/no-such-thing/",
        "/api/v2/sessions/",
        "/api/",
        "/api/v1/sessions/not-a-uuid/messages/x/y/z/",
        "/sse/sessions/not-a-uuid/",
        "/sse/sessions/",
        "/sse/nothing",
        "/api/v1/no-slash",
    ],
)
def test_an_unknown_api_path_is_a_json_404(client, debug, url):
    body = assert_clean_json(client.get(url), 404)
    assert body == {"detail": "Not found."}


@pytest.mark.parametrize("url", ["/v1/no-such-thing", "/v1/", "/v1/models/x/y/z"])
def test_an_unknown_openai_path_is_a_404_in_openais_shape(client, debug, url):
    body = assert_clean_json(client.get(url), 404)
    assert body == {"error": {"message": "Not found.", "type": "invalid_request_error", "param": None, "code": None}}


def test_a_post_to_an_api_path_without_its_slash_is_json_in_debug_too(client, settings):
    # Under DEBUG, CommonMiddleware raises a RuntimeError (APPEND_SLASH cannot redirect a POST).
    settings.DEBUG = True
    response = Client(raise_request_exception=False).post("/api/v1/sessions", {}, content_type="application/json")
    assert response.status_code in (404, 500)
    assert_clean_json(response, response.status_code)


def test_a_disallowed_host_on_an_api_path_is_a_json_400(debug):
    response = Client(raise_request_exception=False).get("/api/v1/sessions/", HTTP_HOST="evil.example")
    assert assert_clean_json(response, 400) == {"detail": "Bad request."}


# --- exceptions inside API views ------------------------------------------------------------
def explode(*args, **kwargs):
    raise RuntimeError(SECRET_TEXT)


def test_an_exception_in_an_api_view_is_a_json_500_without_details(api, alice, collab, debug, monkeypatch, caplog):
    monkeypatch.setattr(selectors, "messages_for_session", explode)
    client = api(alice)
    client.raise_request_exception = False
    response = client.get(f"/api/v1/sessions/{collab.pk}/messages/")
    assert assert_clean_json(response, 500) == {"detail": "Internal server error."}
    # ...but the server's log has it, as Django logs every uncaught exception.
    assert any(record.exc_info and SECRET_TEXT in str(record.exc_info[1]) for record in caplog.records)


def test_an_exception_in_a_write_is_a_json_500_and_changes_nothing(api, alice, collab, debug, monkeypatch):
    from sessions_app import services
    from sessions_app.models import Message

    monkeypatch.setattr(services, "message_post", explode)
    monkeypatch.setattr(services, "message_post_one_statement", explode)  # PostgreSQL's first try
    client = api(alice)
    client.raise_request_exception = False
    response = client.post(f"/api/v1/sessions/{collab.pk}/messages/", {"content": "x"}, format="json")
    assert_clean_json(response, 500)
    assert not Message.objects.exists()


def test_an_exception_under_v1_is_a_500_in_openais_shape(settings, debug):
    settings.ROOT_URLCONF = __name__  # a /v1/ view that fails, until the real one exists
    response = Client(raise_request_exception=False).get("/v1/explode")
    body = assert_clean_json(response, 500)
    assert body["error"]["type"] == "server_error"
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_the_django_test_client_still_raises_a_views_exception(api, alice, collab, monkeypatch):
    # The middleware replaces the page only; Django still signals the exception, so other
    # tests keep seeing their tracebacks.
    monkeypatch.setattr(selectors, "messages_for_session", explode)
    with pytest.raises(RuntimeError, match=SECRET_TEXT):
        api(alice).get(f"/api/v1/sessions/{collab.pk}/messages/")


def test_json_errors_from_views_pass_through_unchanged(api, alice, collab, debug):
    response = api(alice).put(f"/api/v1/sessions/{collab.pk}/", {"title": "x"}, format="json")
    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "PUT" not allowed.'}
    assert "Allow" in response


# --- pages ----------------------------------------------------------------------------------
def test_an_unknown_page_is_the_html_404_page(client, settings):
    settings.DEBUG = False
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "Page not found" in html and "· Chorus</title>" in html  # 404.html, inside base.html


def test_an_exception_in_a_page_is_the_html_500_page(settings):
    settings.DEBUG = False
    settings.ROOT_URLCONF = __name__
    response = Client(raise_request_exception=False).get("/page/explode")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "Server error" in html and "· Chorus</title>" in html
    assert SECRET_TEXT not in html and "Traceback" not in html


def test_the_error_templates_extend_the_base_page():
    for name in ("404.html", "500.html"):
        source = (django_settings.BASE_DIR / "templates" / name).read_text()
        assert source.startswith('{% extends "base.html" %}')


# A URLconf with views that fail, for the tests above that need them.
urlpatterns = [path("v1/explode", explode), path("page/explode", explode)]
handler404 = "sessions_app.exceptions.page_not_found"
handler500 = "sessions_app.exceptions.server_error"


# --- values PostgreSQL refuses ----------------------------------------------------------------
NUL_COOKIE = 'sessionid="\\000\\377abcdefgh"'  # Django reads octal escapes: a NUL in the key


@pytest.mark.parametrize("url, status", [("/api/v1/sessions/", 401), ("/accounts/login/", 200)])
def test_a_session_cookie_with_a_nul_is_no_session(client, url, status):
    response = Client(raise_request_exception=False).get(url, HTTP_COOKIE=NUL_COOKIE)
    assert response.status_code == status, response.content[:300]


def test_a_token_with_a_nul_is_refused_without_a_500(api, collab):
    client = api()
    client.raise_request_exception = False
    client.credentials(HTTP_AUTHORIZATION="Token a\x00b")
    response = client.get(f"/api/v1/sessions/{collab.pk}/")
    assert response.status_code in (400, 401), response.content[:300]
    assert response["Content-Type"] == "application/json"


# --- through the ASGI application, as `make run` serves it -------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_through_asgi_with_debug_an_api_failure_is_a_json_500(asgi_app, collab, alice, settings, monkeypatch):
    import httpx
    from channels.db import database_sync_to_async

    from tests.conftest import token_for

    settings.DEBUG = True
    monkeypatch.setattr(selectors, "messages_for_session", explode)
    headers = {"Authorization": f"Token {await database_sync_to_async(token_for)(alice)}"}
    transport = httpx.ASGITransport(app=asgi_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        failed = await client.get(f"/api/v1/sessions/{collab.pk}/messages/", headers=headers, timeout=10)
        unknown = await client.get("/api/v1/nothing-here/", headers=headers, timeout=10)
    for response, status in ((failed, 500), (unknown, 404)):
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        for leak in LEAKS:
            assert leak not in response.text, leak
