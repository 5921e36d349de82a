"""Every API error is JSON (CONTRACT §3), never an HTML page or a traceback, whether
DEBUG is on or not; pages get the HTML error pages of `templates/`.

Three layers, because Django answers errors in three places:
- `api_exception_handler`: DRF's exception handler, for what API views raise.
- `bad_request`, `permission_denied`, `page_not_found`, `server_error`: Django's
  handler400/403/404/500 (config/urls.py), which choose JSON or HTML by path. Django
  does not call handler404/500 with DEBUG on: it renders its technical pages instead.
- `ApiErrorsMiddleware`: outermost, it replaces any error response on an API path that
  is not JSON (Django's technical 404/500 pages under DEBUG, a failure in a middleware)
  with the JSON shape of that path.

API paths are `/api/`, `/sse/` (the stream's refusals are JSON `{"detail"}` too) and
`/v1/`, the OpenAI-compatible endpoint, whose errors have OpenAI's shape
`{"error": {"message", "type", "param", "code"}}` so that OpenAI SDKs can read them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import ObjectDoesNotExist
from django.db import DataError
from django.http import HttpRequest, HttpResponse, HttpResponseServerError, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.views import exception_handler

from sessions_app.regenerations.services import RegenerationConflict
from sessions_app.selectors import SessionNotFound
from sessions_app.services import MemberNotFound, ServiceError

logger = logging.getLogger(__name__)


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            message = _first_message(value)
            return message if field in ("non_field_errors", "detail") else f"{field}: {message}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


def api_exception_handler(exc, context):
    # ObjectDoesNotExist: a row that vanished between the lookup and the write (a
    # concurrent delete) is gone for the caller too.
    if isinstance(exc, SessionNotFound | MemberNotFound | ObjectDoesNotExist):
        exc = exceptions.NotFound()
    elif isinstance(exc, DataError):
        # A value the database refuses to store or compare (a NUL byte, a number out of
        # range) that got past validation: bad input, not a server fault.
        logger.warning("the database refused a value: %s", exc)
        exc = exceptions.ValidationError({"detail": "The request contains a value that the server cannot accept."})
    elif isinstance(exc, ServiceError):
        exc = exceptions.ValidationError({"detail": str(exc)})
    elif isinstance(exc, RegenerationConflict):
        exc = Conflict(str(exc))
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"detail": _first_message(exc.detail), "errors": exc.detail}
    elif not isinstance(response.data, dict) or "detail" not in response.data:
        response.data = {"detail": _first_message(response.data)}
    return response


# --- Django's error handlers and the middleware: JSON on API paths, pages elsewhere ------

API_PATH_PREFIXES = ("/api/", "/sse/", "/v1/")
OPENAI_PATH_PREFIX = "/v1/"

# OpenAI's error `type` for a status; anything else below 500 is an invalid request.
_OPENAI_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_DEFAULT_MESSAGES = {
    400: "Bad request.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    405: "Method not allowed.",
    500: "Internal server error.",
}


def is_api_path(path: str) -> bool:
    return path.startswith(API_PATH_PREFIXES)


def openai_error_body(*, status_code: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error shape, for the `/v1/` endpoint."""
    error_type = "server_error" if status_code >= 500 else _OPENAI_ERROR_TYPES.get(status_code, "invalid_request_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def api_error_response(*, path: str, status_code: int, message: str | None = None) -> JsonResponse:
    """The JSON error of an API path: OpenAI's shape under `/v1/`, `{"detail"}` elsewhere.
    The message is a fixed text for the status, never an exception's."""
    from http import HTTPStatus

    if message is None:
        message = _DEFAULT_MESSAGES.get(status_code) or f"{HTTPStatus(status_code).phrase}."
    if path.startswith(OPENAI_PATH_PREFIX):
        body = openai_error_body(status_code=status_code, message=message)
    else:
        body = {"detail": message}
    return JsonResponse(body, status=status_code)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request.path):
        return api_error_response(path=request.path, status_code=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request.path):
        return api_error_response(path=request.path, status_code=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request.path):
        return api_error_response(path=request.path, status_code=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_path(request.path):
        return api_error_response(path=request.path, status_code=500)
    try:
        return defaults.server_error(request)
    except Exception:
        # The page itself failed (a broken template): a plain page rather than nothing.
        logger.exception("rendering 500.html failed")
        return HttpResponseServerError(b"<!doctype html><title>Server error</title><h1>Server error</h1>")


def _is_json(response: HttpResponse) -> bool:
    content_type = response.get("Content-Type", "")
    return content_type.split(";", 1)[0].strip().endswith(("/json", "+json"))


class ApiErrorsMiddleware:
    """Makes every error response on an API path JSON, DEBUG or not.

    Put it first in MIDDLEWARE. Under DEBUG, Django answers an unknown URL and an
    uncaught exception with technical HTML pages (a traceback, settings, the URL list)
    and never calls handler404/500; those responses are replaced here. Django has
    logged the exception and sent `got_request_exception` before this runs, so nothing
    is lost but the page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and is_api_path(request.path)
            and not response.streaming
            and not _is_json(response)
        ):
            replacement = api_error_response(path=request.path, status_code=response.status_code)
            for header in ("Allow", "Retry-After", "WWW-Authenticate"):
                if header in response:
                    replacement[header] = response[header]
            return replacement
        return response
