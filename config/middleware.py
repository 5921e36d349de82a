"""A database that is down, restarting or stalled answers 503 JSON, not a traceback."""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

logger = logging.getLogger(__name__)

UNAVAILABLE_DETAIL = "The database is unavailable; retry shortly."


class DatabaseUnavailableMiddleware:
    """Turns the errors of an unreachable or stalled database into `503 {"detail"}` with
    `Retry-After`: OperationalError (connection refused or lost, a statement cancelled by
    statement_timeout, no pooled connection within CHORUS_DB_POOL_TIMEOUT) and
    InterfaceError (a connection closed under us); SQLite's "database is locked" is an
    OperationalError too, and means the same to a client. The request's transaction did
    not commit (unless the connection died during COMMIT itself), so a client may retry.
    Other errors go on to the 500 handler."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.warning("database unavailable for %s %s: %r", request.method, request.path, exception)
        response = JsonResponse({"detail": UNAVAILABLE_DETAIL}, status=503)
        response["Retry-After"] = "2"
        return response
