"""Stream tickets: short-lived signed tokens for EventSource, which cannot send headers."""

from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from django.core import signing

_SALT = "chorus.stream-ticket"


class TicketInvalid(Exception):
    pass


@dataclass(frozen=True, slots=True)
class TicketClaims:
    user_id: int
    token_digest: str | None  # the API token the ticket was asked for with, if any
    auth_hash: str | None = None  # the login's session auth hash, if asked for with the cookie


def ticket_issue(
    *, user_id: int, session_id: UUID | str, token_digest: str | None = None, auth_hash: str | None = None
) -> str:
    """A ticket for `user_id` and that session. With `token_digest` (the knox digest of the
    token the request carried) the stream it opens lives no longer than that token; with
    `auth_hash` (the session auth hash of the login that asked, `get_session_auth_hash()`)
    no longer than the user's password: a password change ends it, as it ends that user's
    other logins. (The hash is an HMAC keyed with SECRET_KEY; Django's signed-cookie
    sessions hand it to clients the same way.)"""
    claims = {"u": user_id, "s": UUID(str(session_id)).hex}
    if token_digest:
        claims["t"] = token_digest
    if auth_hash:
        claims["h"] = auth_hash
    return signing.dumps(claims, salt=_SALT)


def ticket_read(*, ticket: str, session_id: UUID | str) -> TicketClaims:
    """The ticket's claims. Raises TicketInvalid if it is tampered with, expired, or bound
    to another session."""
    try:
        claims = signing.loads(ticket, salt=_SALT, max_age=settings.CHORUS_STREAM_TICKET_SECONDS)
    except signing.BadSignature as exc:  # SignatureExpired is a subclass
        raise TicketInvalid(str(exc)) from exc
    if not isinstance(claims, dict) or claims.get("s") != UUID(str(session_id)).hex:
        raise TicketInvalid("ticket is for another session")
    digest, auth_hash = claims.get("t"), claims.get("h")
    return TicketClaims(
        user_id=int(claims["u"]),
        token_digest=digest if isinstance(digest, str) else None,
        auth_hash=auth_hash if isinstance(auth_hash, str) else None,
    )


def ticket_verify(*, ticket: str, session_id: UUID | str) -> int:
    """The user id the ticket was issued to (see ticket_read)."""
    return ticket_read(ticket=ticket, session_id=session_id).user_id
