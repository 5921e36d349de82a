"""Writes of the direct stream: admitting a call, mirroring it into a session, logging it.

Everything here is synchronous and short; the ASGI side calls it through
`completions.db.completions_db`. Session events leave only through
`realtime.publish.event_publish` and the regeneration services: a mirrored completion is
a regeneration whose run is the completion itself (no runner is launched for it), so
members see exactly what they see for any regeneration, and a member's cancel, the lease
reaper and message deletion treat it like one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from completions import limits, metrics
from completions.errors import model_not_found, rate_limited, session_forbidden, session_not_found
from completions.models import GenerationLog, GenerationStatus
from completions.requests import CompletionRequest
from completions.selectors import completion_models
from realtime import events
from realtime.publish import event_publish
from sessions_app.models import WRITER_ROLES, CollabSession, Message, MessageRole, Regeneration, RegenerationStatus
from sessions_app.providers import Provider, get_provider
from sessions_app.regenerations.runner import worker_identity
from sessions_app.regenerations.services import RegenerationConflict, RunPlan, regeneration_cancel
from sessions_app.selectors import session_role

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Admission:
    """A call that may run: who, which provider and upstream model, and the mirror's
    regeneration if it has a session. It holds one of the user's concurrency slots until
    `completion_release`."""

    user: AbstractBaseUser
    provider: Provider
    upstream_model: str | None
    plan: RunPlan | None = None


def completion_admit(*, user: AbstractBaseUser, request: CompletionRequest) -> Admission:
    """Check the model, the session role, the user's rate and open completions, in that
    order (so bad or unauthorised calls use up no quota); then start the mirror, if any.
    Raises CompletionError (404 unknown model or session, 403 viewer, 429 limits)."""
    models = completion_models()
    if request.model not in models:
        raise model_not_found(request.model)
    if request.session_id is not None:
        _check_session_writer(session_id=request.session_id, user=user)
    wait = limits.rate_check(user=user)
    if wait is not None:
        raise rate_limited("Rate limit reached for /v1/chat/completions; please retry later.", wait)
    if not limits.concurrency_acquire(user_id=user.pk):
        raise rate_limited(
            f"Too many completions open at once (at most {settings.CHORUS_COMPLETIONS_MAX_CONCURRENT} per user).", 1
        )
    try:
        provider = get_provider()
        upstream_model = models[request.model]
        plan = None
        if request.session_id is not None:
            plan = completion_mirror_start(
                session_id=request.session_id,
                user=user,
                user_query=request.last_user_content,
                provider=provider.name,
                model=upstream_model or provider.model,
            )
    except BaseException:
        limits.concurrency_release(user_id=user.pk)
        raise
    return Admission(user=user, provider=provider, upstream_model=upstream_model, plan=plan)


def completion_release(*, admission: Admission) -> None:
    """Give back the call's concurrency slot."""
    limits.concurrency_release(user_id=admission.user.pk)


def _check_session_writer(*, session_id: UUID, user: AbstractBaseUser, lock: bool = False) -> CollabSession:
    sessions = CollabSession.objects.select_for_update() if lock else CollabSession.objects
    session = sessions.filter(pk=session_id).first()
    role = session_role(session_id=session_id, user=user) if session is not None else None
    if session is None or (role is None and not user.is_staff):
        raise session_not_found()
    if role not in WRITER_ROLES:
        raise session_forbidden()
    return session


# --- the mirror -------------------------------------------------------------------------
def completion_mirror_start(
    *, session_id: UUID, user: AbstractBaseUser, user_query: str, provider: str, model: str
) -> RunPlan:
    """Create the assistant message that mirrors a completion and its regeneration,
    already `running` in this process, and publish `message_regenerating`. The role is
    checked again under the session's row lock. Returns the plan that the regeneration
    services (`regeneration_append`, `_complete`, `_fail`) take. Raises CompletionError
    (404 / 403) if the user may not write in the session."""
    with transaction.atomic():
        session = _check_session_writer(session_id=session_id, user=user, lock=True)
        now = timezone.now()
        message = Message.objects.create(
            session=session, role=MessageRole.ASSISTANT, author=None, content="", created_at=now
        )
        # The message is its own source: the request names no message of the session, and
        # "one active regeneration per source" then holds trivially.
        regeneration = Regeneration.objects.create(
            session=session,
            message=message,
            source_message=message,
            requested_by=user,
            user_query=user_query[: settings.CHORUS_MAX_MESSAGE_CHARS],
            provider=provider,
            model=model,
            status=RegenerationStatus.RUNNING,
            created_at=now,
            started_at=now,
            heartbeat_at=now,
            worker=worker_identity(),
        )
        event_publish(
            session_id=session.pk,
            payload=events.message_regenerating(
                message_id=str(message.pk),
                original_message_id=None,
                task_id=regeneration.task_id,
                regeneration_id=str(regeneration.pk),
                user_query=regeneration.user_query or None,
            ),
        )
    return RunPlan(
        regeneration_id=regeneration.pk,
        session_id=session.pk,
        message_id=message.pk,
        provider=provider,
        conversation=[],
    )


def completion_mirror_cancel(*, plan: RunPlan) -> None:
    """Cancel the mirror's regeneration (`regeneration_cancelled`) unless it has ended."""
    regeneration = Regeneration.objects.filter(pk=plan.regeneration_id).first()
    if regeneration is None:
        return
    try:
        regeneration_cancel(regeneration=regeneration)
    except RegenerationConflict:
        pass  # completed or failed already


# --- the generation log ------------------------------------------------------------------
@dataclass(slots=True)
class CallRecord:
    """What one call did, filled in as it goes; `generation_log_write` stores it."""

    user_id: int | None = None
    model: str = ""
    provider: str = ""
    stream: bool = False
    message_count: int = 0
    prompt_chars: int = 0
    prompt_tokens: int = 0
    completion_chars: int = 0
    completion_tokens: int = 0
    first_token_seconds: float | None = None
    duration_seconds: float = 0.0
    status: str = GenerationStatus.FAILED
    finish_reason: str = ""
    http_status: int = 200
    error: str = ""
    session_id: UUID | None = None
    message_id: UUID | None = None


def generation_log_write(*, record: CallRecord) -> GenerationLog:
    """Store one call's log row and count it in this process's metrics."""
    metrics.COMPLETIONS.labels(record.status).inc()
    if record.completion_tokens:
        metrics.COMPLETION_TOKENS.inc(record.completion_tokens)
    if record.first_token_seconds is not None:
        metrics.FIRST_TOKEN.observe(record.first_token_seconds)
    fields = {
        "user_id": record.user_id,
        "model": record.model[:200],
        "provider": record.provider,
        "stream": record.stream,
        "message_count": record.message_count,
        "prompt_chars": record.prompt_chars,
        "prompt_tokens": record.prompt_tokens,
        "completion_chars": record.completion_chars,
        "completion_tokens": record.completion_tokens,
        "first_token_seconds": record.first_token_seconds,
        "duration_seconds": record.duration_seconds,
        "status": record.status,
        "finish_reason": record.finish_reason,
        "http_status": record.http_status,
        "error": record.error[:2000],
        "session_id": record.session_id,
        "message_id": record.message_id,
    }
    try:
        with transaction.atomic():
            return GenerationLog.objects.create(**fields)
    except IntegrityError:
        # The session (and so the message) or the user was deleted during the call: the
        # row is still written, without what no longer exists.
        fields.update(session_id=None, message_id=None)
        fields["user_id"] = record.user_id if _user_exists(record.user_id) else None
        return GenerationLog.objects.create(**fields)


def _user_exists(user_id: int | None) -> bool:
    return user_id is not None and get_user_model().objects.filter(pk=user_id).exists()
