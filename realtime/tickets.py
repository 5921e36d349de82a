"""Stream tickets: short-lived signed tokens for EventSource, which cannot send headers."""

from uuid import UUID

from django.conf import settings
from django.core import signing

_SALT = "chorus.stream-ticket"


class TicketInvalid(Exception):
    pass


def ticket_issue(*, user_id: int, session_id: UUID | str) -> str:
    return signing.dumps({"u": user_id, "s": UUID(str(session_id)).hex}, salt=_SALT)


def ticket_verify(*, ticket: str, session_id: UUID | str) -> int:
    """The user id the ticket was issued to. Raises TicketInvalid if it is tampered with,
    expired, or bound to another session."""
    try:
        claims = signing.loads(ticket, salt=_SALT, max_age=settings.CHORUS_STREAM_TICKET_SECONDS)
    except signing.BadSignature as exc:  # SignatureExpired is a subclass
        raise TicketInvalid(str(exc)) from exc
    if not isinstance(claims, dict) or claims.get("s") != UUID(str(session_id)).hex:
        raise TicketInvalid("ticket is for another session")
    return int(claims["u"])
