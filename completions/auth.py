"""Who is calling /v1/: DRF's configured authentication classes, as the REST API uses them.

The endpoint is not a DRF view (it is an ASGI app, for the long-lived stream), so it builds
the request a DRF view would see and asks the same authenticators: a change of token
scheme in settings applies here with no change. Cookie authentication is left out: it
needs CSRF protection, which API callers do not carry.
"""

from __future__ import annotations

import io

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.settings import api_settings

from completions.errors import CompletionError, unauthenticated


def authenticate(scope: dict) -> AbstractBaseUser:
    """The active user whose API token the request carries (`Authorization: Bearer …`).
    Raises CompletionError 401 otherwise, or 400 for a Host not in ALLOWED_HOSTS.
    Synchronous (database): call it off the event loop."""
    request = ASGIRequest(scope, io.BytesIO())
    try:
        request.get_host()
    except DisallowedHost:
        raise CompletionError(400, "Invalid Host header.", code="invalid_host")
    authenticators = [
        cls() for cls in api_settings.DEFAULT_AUTHENTICATION_CLASSES if not issubclass(cls, SessionAuthentication)
    ]
    drf_request = Request(request, authenticators=authenticators)
    try:
        user = drf_request.user
    except exceptions.APIException as exc:
        raise unauthenticated(f"Incorrect API key provided: {exc.detail}")
    if user is None or not user.is_authenticated:
        raise unauthenticated()
    return user
