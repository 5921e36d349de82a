"""API tokens (CONTRACT §2): issued at login, one per device, revoked one or all at once.

Tokens are django-rest-knox's: only a SHA-512 digest is stored, so the token itself is
shown once, by `token_issue`. Revoking has the user's open streams re-checked at once
(realtime.publish.streams_recheck); those opened with a revoked token end with
`access_revoked`.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from knox.models import AuthToken

from realtime.publish import streams_recheck


@transaction.atomic
def token_issue(*, user: AbstractBaseUser) -> tuple[AuthToken, str]:
    """A new token for `user`, valid for CHORUS_TOKEN_TTL_SECONDS: the stored row and the
    token itself (not stored anywhere: it cannot be shown again). The user's expired
    tokens are deleted on the way (authentication never writes, so they go here)."""
    AuthToken.objects.filter(user=user, expiry__lte=timezone.now()).delete()
    return AuthToken.objects.create(user=user, expiry=timedelta(seconds=settings.CHORUS_TOKEN_TTL_SECONDS))


@transaction.atomic
def token_revoke(*, token: AuthToken) -> None:
    """Revoke one token (logout); streams opened with it end within seconds."""
    token.delete()
    streams_recheck(user_ids=[token.user_id])


@transaction.atomic
def tokens_revoke(*, tokens: QuerySet[AuthToken]) -> int:
    """Revoke these tokens (the admin's action); returns how many there were."""
    user_ids = set(tokens.values_list("user_id", flat=True))
    count, _ = tokens.delete()
    streams_recheck(user_ids=user_ids)
    return count


def tokens_revoke_all(*, user: AbstractBaseUser) -> int:
    """Revoke every token of `user` (logout everywhere); returns how many there were."""
    return tokens_revoke(tokens=AuthToken.objects.filter(user=user))
