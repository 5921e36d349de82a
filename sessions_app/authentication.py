"""Token authentication for the REST API: django-rest-knox tokens, with the lookup written once.

Tokens are stored as SHA-512 digests (knox); the first 15 characters (`token_key`) are
kept in clear to find the row, and the digest of the whole token is compared in constant
time. A token past its `expiry` is refused (CONTRACT §2).

Every API request starts here, and every published message is an API request. An ORM
lookup (`AuthToken.objects.filter(token_key=…).select_related("user")`) cost more to
compile than to run (about 0.7 ms of the 5.2 ms of CPU a message post took, measured with
py-spy on PostgreSQL); the same join, built once from the models' `_meta` (realtime.sql),
costs a tenth of that. Unlike knox's own class it writes nothing on the request path
(knox deletes expired tokens as it meets them; `token_issue` does that at login instead).
"""

from __future__ import annotations

from hmac import compare_digest

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS
from rest_framework import authentication, exceptions

from realtime.sql import RowLoader, cached_sql, column, fetch_all, table


@cached_sql
def _token_user() -> tuple[str, RowLoader, RowLoader]:
    User = get_user_model()
    tokens, users = RowLoader(AuthToken, "t"), RowLoader(User, "u")
    pk = column(User, User._meta.pk.name)
    sql = (
        f"SELECT {tokens.columns}, {users.columns} FROM {table(AuthToken)} t"
        f" JOIN {table(User)} u ON u.{pk} = t.{column(AuthToken, 'user')}"
        f" WHERE t.{column(AuthToken, 'token_key')} = %s"
    )
    return sql, tokens, users


def token_lookup(token: str) -> AuthToken | None:
    """The stored token (with its `user` loaded) whose digest matches `token` and that has
    not expired; None otherwise. One query."""
    if len(token) <= CONSTANTS.TOKEN_KEY_LENGTH:
        return None  # knox tokens are 64 characters; this cannot be one
    sql, tokens, users = _token_user()
    digest = hash_token(token)
    for row in fetch_all(sql, [token[: CONSTANTS.TOKEN_KEY_LENGTH]]):
        candidate = tokens.load(row[: tokens.width])
        if compare_digest(digest, candidate.digest):
            if candidate.expiry is not None and candidate.expiry <= timezone.now():
                return None
            candidate.user = users.load(row[tokens.width :])
            return candidate
    return None


class TokenAuthentication(KnoxTokenAuthentication):
    """`Authorization: Token <token>`, or `Bearer <token>` as OpenAI SDKs send it (CONTRACT §2).
    `request.auth` is the knox `AuthToken` (logout deletes it)."""

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

    def authenticate_credentials(self, key: str) -> tuple[AbstractBaseUser, AuthToken]:
        token = token_lookup(key)
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return token.user, token


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema documents it (drf-spectacular finds extensions by class)."""

    target_class = TokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        scheme = build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Token")
        scheme["description"] = "`Authorization: Token <token>` or `Bearer <token>`, from POST /api/v1/auth/token/."
        return scheme
