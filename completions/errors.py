"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` (CONTRACT §8).

The status decides which exception the official SDKs raise (400 BadRequestError, 401
AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 429 RateLimitError,
5xx InternalServerError); `type` and `code` follow OpenAI's own values where it has one.
"""

from __future__ import annotations

import json
import math

from sessions_app.providers import ProviderError


class CompletionError(Exception):
    """A call that cannot be served, with the status and OpenAI error fields to answer.
    Before the headers it is the response; after them it goes in-band."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 (OpenAI's field name)
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body(), ensure_ascii=False).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"application/json")]
        if self.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="chorus"'))
        if self.retry_after is not None:
            headers.append((b"retry-after", str(max(1, math.ceil(self.retry_after))).encode()))
        return headers


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> CompletionError:
    """400: the request is malformed or asks for what is not supported."""
    return CompletionError(400, message, param=param, code=code)


def unauthenticated(message: str = "No API key provided. Send 'Authorization: Bearer <token>'.") -> CompletionError:
    return CompletionError(401, message, code="invalid_api_key")


def model_not_found(model: str) -> CompletionError:
    return CompletionError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def session_not_found() -> CompletionError:
    return CompletionError(404, "No such session.", param="session", code="session_not_found")


def session_forbidden() -> CompletionError:
    return CompletionError(
        403,
        "Only owners and editors of the session may mirror a completion into it.",
        type="permission_error",
        param="session",
        code="insufficient_role",
    )


def rate_limited(message: str, retry_after: float | None) -> CompletionError:
    return CompletionError(429, message, type="requests", code="rate_limit_exceeded", retry_after=retry_after or 1)


# A provider's failure before the first byte: the caller gets a status that says whose
# fault it is (ours to retry later, not theirs to fix).
_PROVIDER_STATUS = {
    "unreachable": (502, "upstream_unreachable"),
    "timeout": (504, "upstream_timeout"),
    "busy": (429, "upstream_rate_limited"),
    "misconfigured": (502, "upstream_misconfigured"),
    "failed": (502, "upstream_error"),
}


def from_provider(exc: ProviderError) -> CompletionError:
    """The CompletionError for a provider's failure (its message is fit for users)."""
    status, code = _PROVIDER_STATUS.get(getattr(exc, "kind", "failed"), (502, "upstream_error"))
    kind = "requests" if status == 429 else "server_error"
    retry_after = getattr(exc, "retry_after", None)
    return CompletionError(
        status, exc.user_message, type=kind, code=code, retry_after=(retry_after or 1) if status == 429 else None
    )


def in_band(error: CompletionError) -> bytes:
    """The SSE frame of an error after the headers, then the end marker."""
    return b"data: " + error.body_bytes() + b"\n\ndata: [DONE]\n\n"
