"""The batched re-check of open streams (realtime.access.grants_refused): what it refuses,
in one query per 200 grants, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.contrib.sessions.backends import db
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from knox.models import AuthToken

from realtime.access import Grant, grants_refused
from sessions_app import services
from sessions_app.tokens import token_issue

pytestmark = pytest.mark.django_db


def grant(user, session, token: AuthToken | None = None) -> Grant:
    return Grant(user_id=user.pk, session_key=str(session.pk), token_digest=token.digest if token else None)


def test_what_holds_and_what_does_not(collab, alice, bob, carol, outsider, staff_user, make_user):
    bobs_token, _ = token_issue(user=bob)
    alices_token, _ = token_issue(user=alice)
    expired, _ = token_issue(user=bob)
    AuthToken.objects.filter(pk=expired.pk).update(expiry=timezone.now() - dt.timedelta(seconds=1))
    revoked, _ = token_issue(user=carol)
    revoked_grant = grant(carol, collab, revoked)
    revoked.delete()
    former_staff = make_user("former-staff")  # was staff when the stream opened
    deactivated = make_user("gone")
    services.member_add(session=collab, username="gone", role="viewer")
    deactivated.is_active = False
    deactivated.save()
    deleted_session = services.session_create(owner=alice, title="Deleted")
    doomed = grant(alice, deleted_session)
    deleted_session.delete()

    holding = {
        "owner by cookie or ticket": grant(alice, collab),
        "editor by token": grant(bob, collab, bobs_token),
        "viewer": grant(carol, collab),
        "staff, not a member": grant(staff_user, collab),
    }
    refused = {
        "an expired token": grant(bob, collab, expired),
        "a revoked token": revoked_grant,
        "someone else's token": Grant(user_id=bob.pk, session_key=str(collab.pk), token_digest=alices_token.digest),
        "not a member": grant(outsider, collab),
        "no longer staff": grant(former_staff, collab),
        "deactivated": grant(deactivated, collab),
        "a deleted session": doomed,
        "a deleted user": Grant(user_id=10**9, session_key=str(collab.pk)),
        "an unknown session": Grant(user_id=alice.pk, session_key=str(uuid.uuid4())),
    }
    answer = grants_refused(grants=[*holding.values(), *refused.values()])
    assert {name for name, g in holding.items() if g in answer} == set()
    assert {name for name, g in refused.items() if g not in answer} == set()


def test_one_query_per_two_hundred_grants(collab, alice, bob):
    token, _ = token_issue(user=bob)
    grants = [grant(alice, collab), grant(bob, collab, token)]
    with CaptureQueriesContext(connection) as queries:
        assert grants_refused(grants=grants * 150) == set()  # duplicates count once
    assert len(queries) == 1
    many = [Grant(user_id=alice.pk, session_key=str(uuid.uuid4())) for _ in range(350)]
    with CaptureQueriesContext(connection) as queries:
        assert grants_refused(grants=[*many, grant(alice, collab)]) == set(many)
    assert len(queries) == 2


def test_batches_are_padded_to_a_few_statement_shapes(collab, alice):
    """Each batch size is its own statement (prepared once on PostgreSQL): padding keeps
    their number small whatever the number of streams."""
    shapes = set()
    for count in (1, 7, 9, 49, 51, 199, 200, 201, 420):
        grants = [Grant(user_id=alice.pk, session_key=str(uuid.uuid4())) for _ in range(count - 1)]
        with CaptureQueriesContext(connection) as queries:
            refused = grants_refused(grants=[*grants, grant(alice, collab)])
        assert refused == set(grants)
        shapes.update(q["sql"].count("(") for q in queries.captured_queries)
    assert len(shapes) <= 3


def test_nothing_to_check_is_no_query():
    with CaptureQueriesContext(connection) as queries:
        assert grants_refused(grants=[]) == set()
    assert len(queries) == 0


def test_login_sessions_hold_while_their_row_does(collab, alice, bob):
    from django.contrib.sessions.backends.db import SessionStore

    live, ended, expired = SessionStore(), SessionStore(), SessionStore()
    for store in (live, ended, expired):
        store["_auth_user_id"] = str(alice.pk)
        store.create()
    ended.delete()
    SessionStore.get_model_class().objects.filter(session_key=expired.session_key).update(
        expire_date=timezone.now() - dt.timedelta(seconds=1)
    )
    grants = {
        name: Grant(user_id=alice.pk, session_key=str(collab.pk), login_session=store.session_key)
        for name, store in (("live", live), ("ended", ended), ("expired", expired))
    }
    refused = grants_refused(grants=list(grants.values()))
    assert {name for name, g in grants.items() if g in refused} == {"ended", "expired"}


class SessionStore(db.SessionStore):
    """An engine of our own on top of Django's database store (this module as SESSION_ENGINE)."""


def test_login_sessions_of_a_database_engine_of_our_own_are_checked(collab, alice, settings):
    settings.SESSION_ENGINE = __name__
    gone = Grant(user_id=alice.pk, session_key=str(collab.pk), login_session="no-such-row")
    assert grants_refused(grants=[gone]) == {gone}


def test_login_sessions_kept_elsewhere_than_the_database_are_not_checked(collab, alice, settings):
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    gone = Grant(user_id=alice.pk, session_key=str(collab.pk), login_session="no-such-row")
    assert grants_refused(grants=[gone]) == set()
