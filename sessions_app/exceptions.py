"""Every API error is JSON `{"detail": "..."}` (CONTRACT §3), never HTML."""

from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.views import exception_handler

from sessions_app.regenerations.services import RegenerationConflict
from sessions_app.selectors import SessionNotFound
from sessions_app.services import MemberNotFound, ServiceError


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
    if isinstance(exc, SessionNotFound | MemberNotFound):
        exc = exceptions.NotFound()
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


def json_not_found(request, exception=None):
    return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)


def json_server_error(request):
    return JsonResponse({"detail": "Internal server error."}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)


def json_bad_request(request, exception=None):
    return JsonResponse({"detail": "Bad request."}, status=status.HTTP_400_BAD_REQUEST)
