"""The authorization matrix (CONTRACT §2 and §3): every endpoint, for every kind of caller.

Callers: anonymous, a non-member, the session's viewer, editor and owner, staff who is not
a member, and three who must be refused outright: a deactivated member, the owner with an
expired token and the owner with a revoked token. Everyone calls with an API token.

The rule, read from the contract:
- no valid credentials (none, a deactivated user, an expired or revoked token): 401;
- a user who is not a member (and not staff) gets 404 for everything about a session;
- staff may read every session, and write none they are not a member of (403);
- a member without the role an action needs gets 403;
- otherwise the route's success status.

Routes the contract names that this tree does not serve yet are skipped, saying so; their
cells turn on by themselves when the route appears.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import dataclass, field

import pytest
from django.urls import Resolver404, resolve
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from realtime.models import Event
from sessions_app import services
from sessions_app.models import Role
from sessions_app.regenerations.services import regeneration_start
from sessions_app.tokens import token_issue
from tests.support.asgi import ASGIStream

# --- who calls ------------------------------------------------------------------------------
PRINCIPALS = [
    "anonymous",
    "non_member",
    "viewer",
    "editor",
    "owner",
    "staff",
    "deactivated",
    "expired_token",
    "revoked_token",
]
NO_CREDENTIALS = {"anonymous", "deactivated", "expired_token", "revoked_token"}
ROLE = {"viewer": Role.VIEWER, "editor": Role.EDITOR, "owner": Role.OWNER}
AUTHOR = "editor"  # wrote the message the message routes act on


# --- what they call ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str  # {session}, {message}, {regeneration}, {viewer} are filled in per test
    need: str  # signed_in | member | member_only | writer | author_or_owner | owner | staff
    success: int
    body: dict = field(default_factory=dict)


S = "/api/v1/sessions/{session}"
M = S + "/messages/{message}/"
R = "/api/v1/regenerations/{regeneration}/"
REGENERATE = {"sessionId": "{session}", "messageId": "{message}"}
ROUTES = [
    Route("sessions list", "get", "/api/v1/sessions/", "signed_in", 200),
    Route("session create", "post", "/api/v1/sessions/", "signed_in", 201, {"title": "Mine"}),
    Route("session detail", "get", S + "/", "member", 200),
    Route("session rename", "patch", S + "/", "owner", 200, {"title": "Renamed"}),
    Route("session delete", "delete", S + "/", "owner", 204),
    Route("member add", "post", S + "/members/", "owner", 201, {"username": "dave", "role": "viewer"}),
    Route("member remove", "delete", S + "/members/{viewer}/", "owner", 204),
    Route("messages list", "get", S + "/messages/", "member", 200),
    Route("message post", "post", S + "/messages/", "writer", 201, {"content": "hello"}),
    Route("message get", "get", M, "member", 200),
    Route("message edit", "patch", M, "author_or_owner", 200, {"content": "edited"}),
    Route("message delete", "delete", M, "author_or_owner", 204),
    Route("regenerate", "post", "/api/v1/chat_actions/regenerate", "writer", 202, REGENERATE),
    Route("regeneration detail", "get", R, "member", 200),
    Route("regeneration cancel", "post", R + "cancel/", "writer", 202),
    Route("events", "get", S + "/events/", "member", 200),
    Route("stream ticket", "post", S + "/stream-ticket/", "member", 201),
    Route("ops stats", "get", "/api/v1/ops/stats/", "staff", 200),
    Route("presence", "get", S + "/presence/", "member", 200),
    Route("typing start", "post", S + "/typing/", "writer", 204),
    Route("typing stop", "delete", S + "/typing/", "writer", 204),
    # A read position is the member's own: staff who are not members have none to move.
    Route("read position", "put", S + "/read-position/", "member_only", 200, {"lastEventId": 1}),
    Route("logout", "post", "/api/v1/auth/logout/", "signed_in", 204),
    Route("logout all", "post", "/api/v1/auth/logout-all/", "signed_in", 204),
]  # fmt: skip


def expected_status(route: Route, who: str) -> int:
    if who in NO_CREDENTIALS:
        return 401
    if route.need == "signed_in":
        return route.success
    if route.need == "staff":
        return route.success if who == "staff" else 403
    role = ROLE.get(who)
    if role is None and who != "staff":
        return 404  # existence is not revealed
    allowed = {
        "member": role is not None or who == "staff",
        "member_only": role is not None,
        "writer": role in (Role.OWNER, Role.EDITOR),
        "owner": role == Role.OWNER,
        "author_or_owner": role == Role.OWNER or who == AUTHOR,
    }[route.need]
    return route.success if allowed else 403


# --- the world each cell runs in ------------------------------------------------------------
@pytest.fixture
def world(make_user, collab, alice, bob, carol, outsider, staff_user):
    """collab (alice owner, bob editor, carol viewer, erin a deactivated editor), a message
    by bob, and a token for every caller."""
    make_user("dave")
    erin = make_user("erin")
    services.member_add(session=collab, username="erin", role=Role.EDITOR)
    message = services.message_create(session=collab, author=bob, content="bob's")
    users = {"non_member": outsider, "viewer": carol, "editor": bob, "owner": alice, "staff": staff_user}
    tokens = {who: token_issue(user=user)[1] for who, user in users.items()}
    tokens["deactivated"] = token_issue(user=erin)[1]
    erin.is_active = False
    erin.save()
    expired, tokens["expired_token"] = token_issue(user=alice)
    AuthToken.objects.filter(pk=expired.pk).update(expiry=timezone.now() - dt.timedelta(seconds=1))
    revoked, tokens["revoked_token"] = token_issue(user=alice)
    revoked.delete()
    values = {"session": str(collab.pk), "message": str(message.pk), "viewer": "carol"}
    return {"session": collab, "tokens": tokens, "values": values}


@pytest.fixture
def rest_world(world, alice):
    """With a queued regeneration of one of alice's messages. (Not started: the test's
    transaction never commits, so no runner picks it up.)"""
    source = services.message_create(session=world["session"], author=alice, content="alice's")
    regeneration = regeneration_start(session=world["session"], source_message=source, requested_by=alice)
    world["values"]["regeneration"] = str(regeneration.pk)
    return world


def fill(template, values: dict):
    if isinstance(template, str):
        return template.format(**values)
    if isinstance(template, dict):
        return {key: fill(value, values) for key, value in template.items()}
    return template


def served(route: Route, path: str) -> bool:
    try:
        match = resolve(path)
    except Resolver404:
        return False
    view_class = getattr(match.func, "view_class", None) or getattr(match.func, "cls", None)
    return view_class is None or hasattr(view_class, route.method)


# --- the REST cells ---------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("who", PRINCIPALS)
@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
def test_rest(rest_world, route: Route, who: str):
    world = rest_world
    path = fill(route.path, world["values"])
    if not served(route, path):
        pytest.skip(f"{route.method.upper()} {route.path} is not served in this tree yet (CONTRACT §3)")
    client = APIClient()
    if who != "anonymous":
        client.credentials(HTTP_AUTHORIZATION=f"Token {world['tokens'][who]}")
    events_before = Event.objects.filter(session=world["session"]).count()

    response = getattr(client, route.method)(path, fill(route.body, world["values"]), format="json")

    status = expected_status(route, who)
    assert response.status_code == status, f"{route.name} as {who}: {response.content[:300]!r}"
    if status >= 400:
        assert isinstance(response.json()["detail"], str), "errors are JSON {'detail': ...}"
        assert Event.objects.filter(session=world["session"]).count() == events_before, "a refusal changed state"
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Token")
    if status == 404:
        assert response.json() == {"detail": "Not found."}  # the same as for a session that does not exist


# --- the stream -----------------------------------------------------------------------------
def expected_stream_status(who: str) -> int:
    if who in NO_CREDENTIALS:
        return 401
    return 200 if who in ROLE or who == "staff" else 404


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who", PRINCIPALS)
async def test_stream(asgi_app, world, who: str):
    headers = {} if who == "anonymous" else {"Authorization": f"Token {world['tokens'][who]}"}
    path = f"/sse/sessions/{world['values']['session']}/"
    async with ASGIStream(asgi_app, path, headers=headers) as stream:
        status = expected_stream_status(who)
        assert stream.status == status, stream.body
        if status == 200:
            assert (await stream.next_event()).event == "connection"
        else:
            await asyncio.wait_for(stream.finished.wait(), 5)
            assert json.loads(stream.body)["detail"]


def test_the_matrix_covers_every_route_and_caller():
    """Every (route, caller) pair has a cell, each route once."""
    assert len({(r.method, r.path) for r in ROUTES}) == len(ROUTES)
    assert len(ROUTES) * len(PRINCIPALS) + len(PRINCIPALS) == 24 * 9 + 9
