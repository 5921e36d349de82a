"""Behind a TLS proxy (CONTRACT §2): `DJANGO_SECURE_PROXY_SSL_HEADER=1` trusts
X-Forwarded-Proto, makes the session and CSRF cookies Secure and sends HSTS on HTTPS
responses; `DJANGO_CSRF_TRUSTED_ORIGINS` lists public origins; `check --deploy` passes in
the production shape. The settings are read from the environment as the server reads them
(config/settings.py run afresh), then applied to the in-process app."""

from __future__ import annotations

import logging
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_HOST = "chorus.example.com"
PUBLIC_ORIGIN = f"https://{PUBLIC_HOST}"
# What the README's nginx block passes on for a browser at https://chorus.example.com.
NGINX_HEADERS = {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}
SECURITY_SETTINGS = [
    "SECURE_PROXY_SSL_HEADER",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_SSL_REDIRECT",
    "CSRF_TRUSTED_ORIGINS",
    "ALLOWED_HOSTS",
]
DEFAULTS = {
    "SECURE_PROXY_SSL_HEADER": None,
    "SESSION_COOKIE_SECURE": False,
    "CSRF_COOKIE_SECURE": False,
    "SECURE_HSTS_SECONDS": 0,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
    "SECURE_HSTS_PRELOAD": False,
    "SECURE_SSL_REDIRECT": False,
}


def settings_from_env(monkeypatch, **env: str) -> dict:
    """config/settings.py evaluated under this environment: the values a server gets."""
    for name in ("DJANGO_SECURE_PROXY_SSL_HEADER", "DJANGO_CSRF_TRUSTED_ORIGINS", "DJANGO_SECURE_HSTS_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    values = runpy.run_path(str(ROOT / "config" / "settings.py"))
    return {name: values.get(name, DEFAULTS.get(name)) for name in SECURITY_SETTINGS}


@pytest.fixture
def production(settings, monkeypatch):
    """apply(**env): the security settings of that environment, in force for this test."""

    def apply(**env: str) -> dict:
        env.setdefault("DJANGO_ALLOWED_HOSTS", f"{PUBLIC_HOST},127.0.0.1,localhost,testserver")
        values = settings_from_env(monkeypatch, **env)
        for name, value in values.items():
            setattr(settings, name, value)
        return values

    return apply


def sign_in_through_proxy(*, host: str = PUBLIC_HOST, origin: str = PUBLIC_ORIGIN, https: bool = True):
    """The web app's login as a browser does it through nginx: GET the form (CSRF cookie),
    POST it with the token and the browser's Origin. Returns (browser, form page, answer)."""
    headers = dict(NGINX_HEADERS) if https else {}
    browser = Client(enforce_csrf_checks=True, HTTP_HOST=host, **headers)
    page = browser.get("/accounts/login/")
    assert page.status_code == 200
    csrf = browser.cookies["csrftoken"].value
    answer = browser.post(
        "/accounts/login/",
        {"username": "alice", "password": "pw-for-tests", "csrfmiddlewaretoken": csrf},
        HTTP_ORIGIN=origin,
    )
    return browser, page, answer


# --- the settings themselves ------------------------------------------------------------
def test_without_the_variable_nothing_is_trusted_and_cookies_are_not_secure(monkeypatch):
    values = settings_from_env(monkeypatch)
    assert values["SECURE_PROXY_SSL_HEADER"] is None
    assert values["SESSION_COOKIE_SECURE"] is values["CSRF_COOKIE_SECURE"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0
    assert values["CSRF_TRUSTED_ORIGINS"] == []


def test_the_variable_trusts_the_proxy_and_secures_cookies(monkeypatch):
    values = settings_from_env(
        monkeypatch,
        DJANGO_SECURE_PROXY_SSL_HEADER="1",
        DJANGO_CSRF_TRUSTED_ORIGINS=f" {PUBLIC_ORIGIN}, https://other.example.com ,",
    )
    assert values["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
    assert values["SESSION_COOKIE_SECURE"] is values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_HSTS_SECONDS"] == 31_536_000
    assert values["CSRF_TRUSTED_ORIGINS"] == [PUBLIC_ORIGIN, "https://other.example.com"]
    # Opt-ins, off unless asked for: they commit the whole domain, or redirect probes.
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is values["SECURE_HSTS_PRELOAD"] is False
    assert values["SECURE_SSL_REDIRECT"] is False


# --- signing in through the proxy -------------------------------------------------------
def test_sign_in_through_the_tls_proxy_works_with_the_setting(production, alice):
    production(DJANGO_SECURE_PROXY_SSL_HEADER="1")
    browser, page, answer = sign_in_through_proxy()
    assert page.cookies["csrftoken"]["secure"] is True
    assert page["Strict-Transport-Security"] == "max-age=31536000"
    assert answer.status_code == 302, answer.content[:300]
    session = answer.cookies["sessionid"]
    assert session["secure"] is True and session["httponly"] is True
    assert answer["Strict-Transport-Security"] == "max-age=31536000"
    assert browser.get("/api/v1/sessions/").status_code == 200  # signed in


def test_sign_in_through_the_tls_proxy_fails_without_the_setting(production, alice, caplog):
    """What happens today behind nginx: Django sees plain HTTP, the browser's Origin is
    https://…, and the CSRF check refuses the login form (403)."""
    production()
    with caplog.at_level(logging.WARNING, logger="django.security.csrf"):
        _, page, answer = sign_in_through_proxy()
    assert answer.status_code == 403
    assert f"Origin checking failed - {PUBLIC_ORIGIN} does not match any trusted origins." in caplog.text
    assert page.cookies["csrftoken"]["secure"] == ""  # and cookies are not Secure
    assert "Strict-Transport-Security" not in page


def test_plain_http_gets_no_hsts_and_works_without_the_proxy(production, alice):
    production()
    _, page, answer = sign_in_through_proxy(host="127.0.0.1", origin="http://127.0.0.1", https=False)
    assert answer.status_code == 302
    assert answer.cookies["sessionid"]["secure"] == ""
    assert "Strict-Transport-Security" not in page


def test_hsts_only_on_https_responses(production):
    production(DJANGO_SECURE_PROXY_SSL_HEADER="1")
    assert "Strict-Transport-Security" not in Client().get("/healthz")  # a local probe, plain HTTP
    assert "Strict-Transport-Security" in Client(**NGINX_HEADERS).get("/healthz")


def test_a_proxy_that_passes_another_host_needs_the_trusted_origins(production, alice):
    """nginx with `proxy_set_header Host $proxy_host` (or none) sends the upstream's name."""
    production(DJANGO_SECURE_PROXY_SSL_HEADER="1")
    assert sign_in_through_proxy(host="127.0.0.1")[2].status_code == 403
    production(DJANGO_SECURE_PROXY_SSL_HEADER="1", DJANGO_CSRF_TRUSTED_ORIGINS=PUBLIC_ORIGIN)
    assert sign_in_through_proxy(host="127.0.0.1")[2].status_code == 302


def test_a_forged_origin_is_still_refused_behind_the_proxy(production, alice):
    production(DJANGO_SECURE_PROXY_SSL_HEADER="1", DJANGO_CSRF_TRUSTED_ORIGINS=PUBLIC_ORIGIN)
    assert sign_in_through_proxy(origin="https://evil.example.net")[2].status_code == 403


# --- manage.py check --deploy -----------------------------------------------------------
PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "a-production-secret-of-sufficient-length-and-variety-0123456789-XYZ",
    "DJANGO_ALLOWED_HOSTS": PUBLIC_HOST,
    "DJANGO_SECURE_PROXY_SSL_HEADER": "1",
    "DJANGO_CSRF_TRUSTED_ORIGINS": PUBLIC_ORIGIN,
}


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CHORUS_"))}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_check_deploy_passes_in_the_production_shape():
    result = check_deploy(PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr.upper().replace("RUNTIMEWARNING", "")


def test_check_deploy_fails_without_the_proxy_setting():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DJANGO_SECURE_PROXY_SSL_HEADER"}
    result = check_deploy(env)
    assert result.returncode != 0
    for warning in ("security.W004", "security.W012", "security.W016"):
        assert warning in result.stderr
