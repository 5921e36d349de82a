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

A token seen recently costs no query at all (`TokenCache`): each process keeps the tokens
it has verified for CHORUS_TOKEN_CACHE_SECONDS. That lookup was the largest single part of
a message post (0.45 of 2.5 ms of the request thread's CPU on PostgreSQL, measured in
process; py-spy put 18% of the server's GIL time in it). Revocation stays immediate: every
path that revokes a token or changes a user's rights rings `streams_recheck`, whose
`users_changed` signal empties the cache of those users at once in the process that rang
it and within milliseconds in the others; the time limit only bounds a doorbell lost with
Redis.
"""

from __future__ import annotations

import copy
import threading
import time
from hmac import compare_digest

from django.conf import settings
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

from realtime.publish import users_changed
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
    not expired; None otherwise. One query, or none when this process verified the token
    less than CHORUS_TOKEN_CACHE_SECONDS ago and nothing revoked it since."""
    if len(token) <= CONSTANTS.TOKEN_KEY_LENGTH:
        return None  # knox tokens are 64 characters; this cannot be one
    digest = hash_token(token)
    cached = token_cache.get(digest)
    if cached is not None:
        found = cached
    else:
        epoch = token_cache.epoch
        found = _token_from_database(token, digest)
        if found is None:
            return None
        token_cache.put(digest, found, epoch=epoch)
    if found.expiry is not None and found.expiry <= timezone.now():
        return None
    # A copy per request: the caller may change or delete it (logout deletes request.auth).
    result = copy.copy(found)
    result.user = copy.copy(found.user)
    return result


def _token_from_database(token: str, digest: str) -> AuthToken | None:
    sql, tokens, users = _token_user()
    for row in fetch_all(sql, [token[: CONSTANTS.TOKEN_KEY_LENGTH]]):
        candidate = tokens.load(row[: tokens.width])
        if compare_digest(digest, candidate.digest):
            candidate.user = users.load(row[tokens.width :])
            return candidate
    return None


class TokenCache:
    """Tokens this process has verified, by digest, each kept CHORUS_TOKEN_CACHE_SECONDS
    (0 turns the cache off) and at most `max_entries` at once (the oldest go first).

    `forget_users` drops a user's tokens and moves `epoch` on: a lookup that read the
    database before a revocation and stores its (now stale) row after it is refused, as
    `put` is given the epoch seen before the read."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self.epoch = 0
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, AuthToken]] = {}

    def get(self, digest: str) -> AuthToken | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        stored_at, token = entry
        if time.monotonic() - stored_at >= settings.CHORUS_TOKEN_CACHE_SECONDS:
            self._entries.pop(digest, None)
            return None
        return token

    def put(self, digest: str, token: AuthToken, *, epoch: int) -> None:
        if settings.CHORUS_TOKEN_CACHE_SECONDS <= 0:
            return
        with self._lock:
            if epoch != self.epoch:
                return  # something was revoked while this row was read
            if len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[digest] = (time.monotonic(), token)

    def forget_users(self, user_ids: frozenset[int]) -> None:
        with self._lock:
            self.epoch += 1
            stale = [digest for digest, (_, token) in self._entries.items() if token.user_id in user_ids]
            for digest in stale:
                del self._entries[digest]

    def clear(self) -> None:
        with self._lock:
            self.epoch += 1
            self._entries.clear()


token_cache = TokenCache()


def _forget_changed_users(sender, user_ids: frozenset[int], **kwargs) -> None:
    token_cache.forget_users(user_ids)


users_changed.connect(_forget_changed_users, dispatch_uid="chorus.token-cache")


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
