"""The ops console (CONTRACT §6): server-rendered pages for staff, thin as the API's views.

Anonymous visitors are sent to the login page, signed-in users who are not staff get 403.
Every action is a POST with Django's CSRF token and an explicit confirmation (`confirm=yes`,
sent only by the confirmation page's button): a GET, or a POST without it, shows what would
happen and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from uuid import UUID

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Min
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from ops import selectors, services
from ops.presenters import CHART_HEIGHT, CHART_TOP, CHART_WIDTH, overview_payload
from realtime.events import EventType
from realtime.workers import cluster_session_loads
from sessions_app.models import CollabSession, Regeneration
from sessions_app.regenerations.services import RegenerationConflict
from sessions_app.selectors import session_members

EVENTS_PER_PAGE = 50
SESSIONS_PER_PAGE = 50
AUDIT_PER_PAGE = 50


def staff_required(*, json: bool = False) -> Callable:
    """Anonymous: redirect to login (JSON 401 for the poll endpoint); not staff: 403."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                if json:
                    return JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)
                return redirect_to_login(request.get_full_path())
            if not request.user.is_staff:
                if json:
                    return JsonResponse({"detail": "Staff only."}, status=403)
                raise PermissionDenied("Staff only.")
            return view(request, *args, **kwargs)

        return never_cache(wrapper)

    return decorate


def _page(request: HttpRequest, items, per_page: int):
    return Paginator(items, per_page).get_page(request.GET.get("page"))


# --- the first screen -----------------------------------------------------------------------
@require_GET
@staff_required()
def console(request: HttpRequest) -> HttpResponse:
    live = overview_payload(selectors.ops_overview())
    return render(
        request,
        "ops/console.html",
        {
            "live": live,
            "chart": {"width": CHART_WIDTH, "height": CHART_HEIGHT, "top": CHART_TOP},
            "poll_ms": int(settings.CHORUS_OPS_POLL_SECONDS * 1000),
        },
    )


@require_GET
@staff_required(json=True)
def console_live(request: HttpRequest) -> JsonResponse:
    """What the console's script polls: the first screen's data (ops.presenters)."""
    return JsonResponse(overview_payload(selectors.ops_overview()))


# --- sessions -------------------------------------------------------------------------------
@require_GET
@staff_required()
def sessions_list(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")[:200]
    page = _page(request, selectors.sessions_search(query=query), SESSIONS_PER_PAGE)
    loads = cluster_session_loads()
    rows = [(session, loads.get(str(session.pk))) for session in page.object_list]
    return render(request, "ops/sessions.html", {"page": page, "rows": rows, "query": query})


@require_GET
@staff_required()
def session_detail(request: HttpRequest, session_id: UUID) -> HttpResponse:
    session = get_object_or_404(CollabSession.objects.select_related("owner"), pk=session_id)
    event_type = request.GET.get("type", "")
    if event_type not in EventType._value2member_map_:
        event_type = ""
    events = _page(request, selectors.session_events(session=session, event_type=event_type), EVENTS_PER_PAGE)
    load = cluster_session_loads().get(str(session.pk))
    streams_of = load.users if load else {}
    stored = selectors.session_events(session=session)
    return render(
        request,
        "ops/session.html",
        {
            "session": session,
            "members": [(m, streams_of.get(m.user.username, 0)) for m in session_members(session=session)],
            "load": load,
            "events": events,
            "event_rows": [(e, json.dumps(e.data, ensure_ascii=False)) for e in events],
            "event_type": event_type,
            "event_types": [t.value for t in EventType],
            "stored_count": stored.count(),
            "oldest_stored": stored.aggregate(m=Min("seq"))["m"],
            "regenerations": selectors.regenerations_for_session(session=session),
            "audit": selectors.audit_entries(session_id=session.pk)[:20],
            "notice_form": NoticeForm(),
            "keep_default": settings.CHORUS_HISTORY_MAX_EVENTS,
        },
    )


# --- actions: each a POST with CSRF and a confirmation step -----------------------------------
class PruneForm(forms.Form):
    keep = forms.IntegerField(min_value=0, label="Keep the newest", help_text="events")


class NoticeForm(forms.Form):
    message = forms.CharField(
        max_length=services.NOTICE_MAX_CHARS, widget=forms.Textarea(attrs={"rows": 3}), label="Notice"
    )


class EmptyForm(forms.Form):
    pass


def _confirmed(
    request: HttpRequest,
    *,
    form: forms.Form,
    perform: Callable[[dict], str],
    done_url: str,
    context: dict,
) -> HttpResponse:
    """Run `perform(cleaned_data)` only for a valid POST that carries `confirm=yes`;
    otherwise (a GET, a first POST, invalid input) show the confirmation page."""
    if request.method == "POST" and form.is_valid() and request.POST.get("confirm") == "yes":
        try:
            note = perform(form.cleaned_data)
        except (services.OpsActionError, RegenerationConflict) as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, note)
        return redirect(done_url)
    return render(request, "ops/confirm.html", {"form": form, "done_url": done_url, **context})


@require_http_methods(["GET", "POST"])
@staff_required()
def session_prune(request: HttpRequest, session_id: UUID) -> HttpResponse:
    session = get_object_or_404(CollabSession, pk=session_id)
    data = request.POST if request.method == "POST" else None
    form = PruneForm(data, initial={"keep": settings.CHORUS_HISTORY_MAX_EVENTS})

    def perform(cleaned: dict) -> str:
        change = services.ops_history_prune(actor=request.user, session=session, keep=cleaned["keep"])
        return f"Pruned {change.deleted} event(s); ids continue after {change.last_event_id}."

    return _confirmed(
        request,
        form=form,
        perform=perform,
        done_url=reverse("ops:session", args=[session.pk]),
        context={
            "session": session,
            "title": "Prune history",
            "action_label": "Prune history",
            "explanation": (
                f"Deletes this session's events older than {settings.CHORUS_EVENT_TTL_SECONDS} seconds, "
                "and all but the newest number below. Event ids are never reused; streams resuming from a "
                "pruned id get history_truncated."
            ),
        },
    )


@require_http_methods(["GET", "POST"])
@staff_required()
def session_clear(request: HttpRequest, session_id: UUID) -> HttpResponse:
    session = get_object_or_404(CollabSession, pk=session_id)
    form = EmptyForm(request.POST if request.method == "POST" else None)

    def perform(cleaned: dict) -> str:
        change = services.ops_history_clear(actor=request.user, session=session)
        return f"Cleared {change.deleted} event(s); ids continue after {change.last_event_id}."

    return _confirmed(
        request,
        form=form,
        perform=perform,
        done_url=reverse("ops:session", args=[session.pk]),
        context={
            "session": session,
            "title": "Clear history",
            "action_label": "Delete every stored event",
            "danger": True,
            "explanation": (
                f"Deletes all {selectors.session_events(session=session).count()} stored events of this session. "
                f"The newest id stays {session.last_event_id}: new events continue from there, and streams "
                "resuming from an older id get history_truncated. Messages are not deleted."
            ),
        },
    )


@require_http_methods(["GET", "POST"])
@staff_required()
def session_notice(request: HttpRequest, session_id: UUID) -> HttpResponse:
    session = get_object_or_404(CollabSession, pk=session_id)
    form = NoticeForm(request.POST if request.method == "POST" else None)

    def perform(cleaned: dict) -> str:
        event = services.ops_system_notice(actor=request.user, session=session, message=cleaned["message"])
        return f"Notice sent as event {event.seq}."

    load = cluster_session_loads().get(str(session.pk))
    return _confirmed(
        request,
        form=form,
        perform=perform,
        done_url=reverse("ops:session", args=[session.pk]),
        context={
            "session": session,
            "title": "Send a system notice",
            "action_label": "Send the notice",
            "explanation": (
                "Publishes a system event with this text to the session: every member sees it "
                f"({load.streams if load else 0} stream(s) open now) and it stays in the event log."
            ),
        },
    )


@require_http_methods(["GET", "POST"])
@staff_required()
def regeneration_cancel(request: HttpRequest, regeneration_id: UUID) -> HttpResponse:
    regeneration = get_object_or_404(Regeneration.objects.select_related("session"), pk=regeneration_id)
    form = EmptyForm(request.POST if request.method == "POST" else None)

    def perform(cleaned: dict) -> str:
        services.ops_regeneration_cancel(actor=request.user, regeneration=regeneration)
        return f"Regeneration {regeneration.pk} cancelled."

    next_url = request.POST.get("next") or request.GET.get("next") or ""
    done_url = reverse("ops:session", args=[regeneration.session_id])
    if next_url == reverse("ops:console"):
        done_url = next_url
    return _confirmed(
        request,
        form=form,
        perform=perform,
        done_url=done_url,
        context={
            "session": regeneration.session,
            "regeneration": regeneration,
            "next": next_url,
            "title": "Cancel a regeneration",
            "action_label": "Cancel the regeneration",
            "danger": True,
            "explanation": (
                f"Stops the regeneration ({regeneration.status}, {regeneration.progress}%) wherever it runs; "
                "members see regeneration_cancelled and the text written so far stays."
            ),
        },
    )


# --- the audit log --------------------------------------------------------------------------
@require_GET
@staff_required()
def audit_list(request: HttpRequest) -> HttpResponse:
    page = _page(request, selectors.audit_entries(), AUDIT_PER_PAGE)
    return render(request, "ops/audit.html", {"page": page})
