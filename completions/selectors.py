"""Reads for the direct stream: the models it serves, and the generation log for ops."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from completions.models import GenerationLog, GenerationStatus

LOCAL_MODEL = "chorus-local"


def completion_models() -> dict[str, str | None]:
    """The models `/v1/` exposes, each with the upstream model it is served by (None for
    the `local` provider, which serves only `chorus-local`). With the `openai` provider:
    CHORUS_LLM_MODEL, plus the names of CHORUS_COMPLETIONS_MODEL_MAP
    ("name=upstream,name2=upstream2"; a bare name maps to itself)."""
    if settings.CHORUS_LLM_PROVIDER == "local":
        return {LOCAL_MODEL: None}
    models: dict[str, str | None] = {settings.CHORUS_LLM_MODEL: settings.CHORUS_LLM_MODEL}
    for entry in settings.CHORUS_COMPLETIONS_MODEL_MAP.split(","):
        name, _, upstream = entry.partition("=")
        if name.strip():
            models[name.strip()] = upstream.strip() or name.strip()
    return models


def completion_counts(*, since: datetime | None = None) -> dict[str, int]:
    """Calls per status since `since` (default: the last hour), cluster-wide; every
    status is present."""
    since = since or timezone.now() - timedelta(hours=1)
    counts = dict.fromkeys(GenerationStatus.values, 0)
    rows = GenerationLog.objects.filter(created_at__gte=since).values("status").annotate(n=Count("pk")).order_by()
    for row in rows:
        counts[row["status"]] = row["n"]
    return counts


def completion_failures_recent(*, limit: int = 20) -> list[dict]:
    """The newest failed calls, newest first: when, who, which model, status and error."""
    rows = (
        GenerationLog.objects.filter(status=GenerationStatus.FAILED)
        .select_related("user")
        .order_by("-created_at", "-id")[:limit]
    )
    return [
        {
            "at": row.created_at,
            "username": row.user.get_username() if row.user_id else None,
            "model": row.model,
            "httpStatus": row.http_status,
            "error": row.error,
        }
        for row in rows
    ]
