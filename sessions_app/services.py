"""Writes: every change to sessions, members and messages, each with its event.

Each service runs in one transaction; its events are published inside it and reach the
streams only after commit (realtime.publish).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from realtime import events
from realtime.publish import event_publish, session_close_streams
from realtime.sql import insert
from sessions_app.models import CollabSession, Membership, Message, MessageRole, Role


class ServiceError(Exception):
    """Input that is well-formed but not allowed; the API answers 400 with the message."""


class MemberNotFound(Exception):
    pass


@transaction.atomic
def session_create(*, owner: AbstractBaseUser, title: str) -> CollabSession:
    session = CollabSession(owner=owner, title=title)
    session.full_clean()
    session.save()
    Membership.objects.create(session=session, user=owner, role=Role.OWNER)
    event_publish(session_id=session.pk, payload=events.member_joined(username=owner.get_username(), role=Role.OWNER))
    session.refresh_from_db(fields=["last_event_id"])
    return session


@transaction.atomic
def session_update(*, session: CollabSession, title: str) -> CollabSession:
    session.title = title
    session.full_clean()
    session.save(update_fields=["title", "updated_at"])
    event_publish(session_id=session.pk, payload=events.session_updated(title=title))
    session.refresh_from_db(fields=["last_event_id"])
    return session


@transaction.atomic
def session_delete(*, session: CollabSession) -> None:
    """Deletes the session with its log; its open streams end with `access_revoked`."""
    session_close_streams(session_id=session.pk)
    session.delete()


def _lock_memberships(session: CollabSession) -> None:
    """Serialize membership changes of one session until commit, so that "already a
    member?" and "still a member?" hold when acted on under PostgreSQL's READ COMMITTED
    (SQLite's IMMEDIATE transactions serialize anyway). FOR NO KEY UPDATE is the lock
    event_publish takes next in any case, so message writers wait no more than before."""
    CollabSession.objects.select_for_update(no_key=True).filter(pk=session.pk).values_list("pk", flat=True).first()


@transaction.atomic
def member_add(*, session: CollabSession, username: str, role: str) -> Membership:
    if role not in (Role.EDITOR, Role.VIEWER):
        raise ServiceError("role must be 'editor' or 'viewer' (a session has one owner).")
    _lock_memberships(session)
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise ServiceError(f"No user named {username!r}.")
    if Membership.objects.filter(session=session, user=user).exists():
        raise ServiceError(f"{username!r} is already a member of this session.")
    membership = Membership.objects.create(session=session, user=user, role=role)
    event_publish(session_id=session.pk, payload=events.member_joined(username=username, role=role))
    return membership


@transaction.atomic
def member_remove(*, session: CollabSession, username: str) -> None:
    """Removes the member; the `member_left` event also ends that user's open streams."""
    if "\x00" in username:  # from the URL; no username has one, and PostgreSQL refuses NUL in text
        raise MemberNotFound(username)
    _lock_memberships(session)
    membership = Membership.objects.select_related("user").filter(session=session, user__username=username).first()
    if membership is None:
        raise MemberNotFound(username)
    if membership.role == Role.OWNER:
        raise ServiceError("The owner cannot be removed from their session.")
    role = membership.role
    membership.delete()
    event_publish(session_id=session.pk, payload=events.member_left(username=username, role=role))


@transaction.atomic(savepoint=False)  # no caller recovers from its failure: skip the savepoint
def message_create(
    *, session: CollabSession, author: AbstractBaseUser | None, content: str, role: str = MessageRole.USER
) -> Message:
    message = Message(session=session, author=author, content=content, role=role, created_at=timezone.now())
    # Field checks only: the relations are passed in, already valid, the pk is a fresh uuid,
    # and the role comes from code; the unique and constraint checks cost a query each.
    message.full_clean(
        exclude=["session", "author", "original_message"], validate_unique=False, validate_constraints=False
    )
    insert(message)  # message.save() without the ORM's compile step: every post pays it
    event_publish(
        session_id=session.pk,
        payload=events.message_created(
            message_id=str(message.pk),
            role=message.role,
            author=author.get_username() if author is not None else None,
            content=content,
        ),
    )
    return message


@transaction.atomic
def message_post(*, session: CollabSession, author: AbstractBaseUser, content: str, reply: bool = False):
    """`message_create`, and with `reply` a regeneration that writes the assistant's answer
    (both in one transaction). Returns (message, regeneration or None)."""
    from sessions_app.regenerations.services import regeneration_start

    message = message_create(session=session, author=author, content=content)
    regeneration = None
    if reply:
        regeneration = regeneration_start(session=session, source_message=message, requested_by=author, reply=True)
    return message, regeneration


def message_may_change(*, message: Message, user: AbstractBaseUser, role: str | None) -> bool:
    """CONTRACT §3: a message's author or the session's owner may edit or delete it."""
    return role == Role.OWNER or (role is not None and message.author_id is not None and message.author_id == user.pk)


@transaction.atomic
def message_edit(*, message: Message, content: str) -> Message:
    """Replace the content of a visible message and publish `message_edited`. Raises
    RegenerationConflict while a regeneration is writing the message."""
    from sessions_app.regenerations.selectors import regeneration_writing
    from sessions_app.regenerations.services import RegenerationConflict

    message = Message.objects.select_for_update(of=("self",)).select_related("author").get(pk=message.pk)
    if message.deleted_at is not None:
        raise Message.DoesNotExist
    if regeneration_writing(message=message) is not None:
        raise RegenerationConflict("This message is still being generated; cancel it or wait for it to finish.")
    message.content = content
    message.edited_at = timezone.now()
    message.full_clean(exclude=["session", "author", "original_message"])
    message.save(update_fields=["content", "edited_at"])
    event_publish(
        session_id=message.session_id,
        payload=events.message_edited(
            message_id=str(message.pk),
            role=message.role,
            author=message.author.get_username() if message.author_id else None,
            content=content,
        ),
    )
    return message


@transaction.atomic
def message_delete(*, message: Message) -> list[str]:
    """Soft-delete a message and its regenerated versions, cancel the regenerations that
    write or answer them, and publish `message_deleted`. Returns the deleted ids."""
    from sessions_app.regenerations.services import regenerations_cancel_for_messages

    ids = [message.pk]
    frontier = [message.pk]
    while frontier:  # versions of versions, in order
        frontier = list(
            Message.objects.filter(original_message_id__in=frontier, deleted_at__isnull=True)
            .order_by("created_at", "id")
            .values_list("pk", flat=True)
        )
        ids.extend(pk for pk in frontier if pk not in ids)
    updated = Message.objects.filter(pk__in=ids, deleted_at__isnull=True).update(deleted_at=timezone.now())
    if not updated:
        raise Message.DoesNotExist
    regenerations_cancel_for_messages(message_ids=ids)
    deleted = [str(pk) for pk in ids]
    event_publish(session_id=message.session_id, payload=events.message_deleted(deleted_message_ids=deleted))
    return deleted
