"""Signing in through a TLS proxy on real server processes (CONTRACT §2): the headers
nginx sends reach uvicorn and daphne, which differ — uvicorn trusts X-Forwarded-Proto from
127.0.0.1 by itself (--forwarded-allow-ips), daphne does not — and with
DJANGO_SECURE_PROXY_SSL_HEADER=1 both sign the user in with Secure cookies and HSTS."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import httpx
import pytest

from tests.support.servers import Cluster

pytestmark = pytest.mark.services

HOST = "chorus.example.com"
PROXY_ENV = {"DJANGO_ALLOWED_HOSTS": f"{HOST},127.0.0.1", "DJANGO_SECURE_PROXY_SSL_HEADER": "1"}


def cookies_of(response: httpx.Response) -> SimpleCookie:
    jar = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


def sign_in(url: str) -> tuple[httpx.Response, httpx.Response]:
    """GET the login form and POST it as a browser at https://chorus.example.com does,
    through nginx (Host, X-Forwarded-Proto, Origin). Cookies are carried by hand: a client
    cookie jar would rightly keep Secure cookies off a plain-HTTP connection."""
    headers = {"Host": HOST, "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    with httpx.Client(base_url=url, headers=headers, timeout=20) as client:
        page = client.get("/accounts/login/")
        assert page.status_code == 200
        csrf_cookie = cookies_of(page)["csrftoken"]
        form_token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        answer = client.post(
            "/accounts/login/",
            data={"username": "alice", "password": "pw", "csrfmiddlewaretoken": form_token},
            headers={"Origin": f"https://{HOST}", "Cookie": f"csrftoken={csrf_cookie.value}"},
        )
    return page, answer


@pytest.fixture
def start_server(postgres_url, redis_url):
    started: list[Cluster] = []

    def start(server: str, env: dict[str, str]) -> Cluster:
        cluster = Cluster(postgres_url=postgres_url, redis_url=redis_url, server=server, processes=1, env=env)
        started.append(cluster.start())
        cluster.create_users("alice")
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
def test_sign_in_through_the_proxy_with_the_setting(start_server, server):
    cluster = start_server(server, PROXY_ENV)
    page, answer = sign_in(cluster.urls[0])
    assert answer.status_code == 302, answer.text[:300]
    session = cookies_of(answer)["sessionid"]
    assert session["secure"] is True and session["httponly"] is True
    assert cookies_of(page)["csrftoken"]["secure"] is True
    assert answer.headers["strict-transport-security"] == "max-age=31536000"
    # The cookie works on the API, through the proxy.
    with httpx.Client(base_url=cluster.urls[0], timeout=20) as client:
        response = client.get(
            "/api/v1/sessions/",
            headers={"Host": HOST, "X-Forwarded-Proto": "https", "Cookie": f"sessionid={session.value}"},
        )
    assert response.status_code == 200


def test_daphne_without_the_setting_refuses_the_login_form(start_server):
    """daphne does not look at X-Forwarded-Proto: without the setting Django sees plain
    HTTP while the browser's Origin is https, and the CSRF check answers 403."""
    cluster = start_server("daphne", {"DJANGO_ALLOWED_HOSTS": f"{HOST},127.0.0.1"})
    page, answer = sign_in(cluster.urls[0])
    assert answer.status_code == 403
    assert not cookies_of(page)["csrftoken"]["secure"]
    assert "strict-transport-security" not in page.headers
