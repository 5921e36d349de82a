"""Token authentication for the REST API: DRF's, with its query written once.

Every API request starts here, and every published message is an API request. DRF's
`Token.objects.select_related("user").get(key=…)` cost more to compile than to run
(about 0.7 ms of the 5.2 ms of CPU a message post took, measured with py-spy on
PostgreSQL); the same join, built once from the models' `_meta` (realtime.sql), costs a
tenth of that. Behaviour and messages are DRF's own.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from realtime.sql import RowLoader, cached_sql, column, fetch_one, table


@cached_sql
def _token_user() -> tuple[str, RowLoader, RowLoader]:
    User = get_user_model()
    tokens, users = RowLoader(Token, "t"), RowLoader(User, "u")
    pk = column(User, User._meta.pk.name)
    sql = (
        f"SELECT {tokens.columns}, {users.columns} FROM {table(Token)} t"
        f" JOIN {table(User)} u ON u.{pk} = t.{column(Token, 'user')} WHERE t.{column(Token, 'key')} = %s"
    )
    return sql, tokens, users


class TokenAuthentication(authentication.TokenAuthentication):
    """`Authorization: Token <key>`, or `Bearer <key>` as OpenAI SDKs send it (CONTRACT §2)."""

    keywords = ("token", "bearer")

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].decode("latin-1").lower() not in self.keywords:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(_("Invalid token header. Credentials must be one word."))
        try:
            key = parts[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed(_("Invalid token header. It must not contain invalid characters."))
        return self.authenticate_credentials(key)

    def authenticate_credentials(self, key: str) -> tuple[AbstractBaseUser, Token]:
        sql, tokens, users = _token_user()
        row = fetch_one(sql, [key])
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        token, user = tokens.load(row[: tokens.width]), users.load(row[tokens.width :])
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token.user = user
        return user, token
