"""Signing in and out of the API (CONTRACT §2): `auth/token/`, `auth/logout/`, `auth/logout-all/`."""

from __future__ import annotations

from django.contrib.auth import authenticate, user_logged_in
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app import tokens
from sessions_app.authentication import TokenAuthentication
from sessions_app.throttles import login_throttle_check


class TokenObtainInput(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})


class TokenOutput(serializers.Serializer):
    token = serializers.CharField(help_text="Send as `Authorization: Token <token>` (or `Bearer <token>`).")
    expiresAt = serializers.DateTimeField(source="expiry")


class TokenObtainApi(APIView):
    """A new token on every call (one per device). Throttled per client address and per
    username (429 with Retry-After) before the password is even checked."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(operation_id="v1_auth_token", request=TokenObtainInput, responses={200: TokenOutput}, auth=[])
    def post(self, request: Request) -> Response:
        username = request.data.get("username") if isinstance(request.data, dict) else None
        wait = login_throttle_check(request=request, username=username if isinstance(username, str) else "")
        if wait is not None:
            raise Throttled(wait=wait)
        data = TokenObtainInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request, **data.validated_data)
        if user is None:  # wrong password, unknown or inactive user: one answer for all
            raise ValidationError({"detail": "Unable to log in with provided credentials."})
        instance, token = tokens.token_issue(user=user)
        user_logged_in.send(sender=type(user), request=request, user=user)
        return Response(TokenOutput({"token": token, "expiry": instance.expiry}).data)


class LogoutApi(APIView):
    """Revoke the token this request was made with (so only token authentication)."""

    authentication_classes = [TokenAuthentication]

    @extend_schema(operation_id="v1_auth_logout", request=None, responses={204: None})
    def post(self, request: Request) -> Response:
        tokens.token_revoke(token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutAllApi(APIView):
    """Revoke every token of the caller (token or session cookie)."""

    @extend_schema(operation_id="v1_auth_logout_all", request=None, responses={204: None})
    def post(self, request: Request) -> Response:
        tokens.tokens_revoke_all(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
