"""The members' pages (CONTRACT §6): thin views over sessions_app's services and selectors.

The session page renders its frame on the server; its conversation is loaded by
static/chorus/session.js through the REST API and kept live over the stream.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from sessions_app import selectors as session_selectors
from sessions_app import services
from sessions_app.models import Role
from webapp import selectors
from webapp.forms import SessionCreateForm

SESSIONS_PER_PAGE = 50


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def session_list(request: HttpRequest) -> HttpResponse:
    """My sessions, most recently active first, and the form that creates one (POST:
    the new session's page on success, the list with the form's errors otherwise)."""
    form = SessionCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        session = services.session_create(owner=request.user, title=form.cleaned_data["title"])
        return redirect("web-session-detail", session_id=session.pk)
    page = Paginator(selectors.sessions_by_activity(user=request.user), SESSIONS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    rows = []
    for session in page:
        members = list(session.memberships.all())
        role = next((m.role for m in members if m.user_id == request.user.pk), None)
        rows.append(
            {
                "session": session,
                "role": role,
                "members": [m.user.get_username() for m in members],
                "activity": naturaltime(session.last_activity),
                "unread": session.unread,
            }
        )
    status = 400 if request.method == "POST" else 200
    return render(request, "webapp/session_list.html", {"page": page, "rows": rows, "form": form}, status=status)


@login_required
@require_http_methods(["GET", "HEAD"])
def session_detail(request: HttpRequest, session_id: str) -> HttpResponse:
    """A session's page for its members (and staff, read-only); 404 for anyone else, so
    that a session's existence is not revealed."""
    try:
        session, role = session_selectors.session_get_for_user(session_id=session_id, user=request.user)
    except session_selectors.SessionNotFound:
        raise Http404("No such session.")
    # The page's stream starts from the newest id read with the session row above: the
    # regenerations read next are at least that new, so the stream's replay brings every
    # change to them (a run that starts or ends in between is not missed).
    can_write = session_selectors.is_writer(role)
    config = {
        "sessionId": str(session.pk),
        "username": request.user.get_username(),
        "role": role,
        "canWrite": can_write,
        "isOwner": role == Role.OWNER,
        "lastEventId": session.last_event_id,
        "activeRegenerations": selectors.regenerations_active(session=session),
        "maxMessageChars": settings.CHORUS_MAX_MESSAGE_CHARS,
    }
    context = {"session": session, "role": role, "can_write": can_write, "config": config}
    return render(request, "webapp/session_detail.html", context)
