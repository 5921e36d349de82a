"""Streams that outlive their right to exist end within seconds with `access_revoked`
(CONTRACT §2 and §5): a revoked or expired token, a deactivated user, lost staff status,
lost membership — on every path a `member_left` can take, and never for a replayed one of
someone who is a member again. In-process, through the real ASGI app."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

import realtime.hub as hub_module
import realtime.stream as stream_module
from realtime.hub import current_hub
from sessions_app import services
from sessions_app.models import Role
from tests.conftest import token_for
from tests.realtime.test_stream_auth import cookie_header, ticket_for
from tests.support.asgi import ASGIStream
from tests.support.layer import broadcasts_dropped

pytestmark = [pytest.mark.django_db(transaction=True)]

User = get_user_model()
sync = database_sync_to_async


def stream_path(session) -> str:
    return f"/sse/sessions/{session.pk}/"


@pytest.fixture
def periodic_only(settings):
    """Re-checks come only from the periodic sweep, and often."""
    settings.CHORUS_STREAM_REVALIDATE_SECONDS = 0.2
    settings.CHORUS_KEEPALIVE_SECONDS = 0.4  # the sweeper runs every 0.1 s


@pytest.fixture
def triggers_only(settings):
    """No periodic re-check within a test's time: only immediate triggers can end a stream."""
    settings.CHORUS_STREAM_REVALIDATE_SECONDS = 3600
    settings.CHORUS_RECONCILE_SECONDS = 3600


@pytest.fixture
def recorded_rechecks(monkeypatch):
    """The grants each batched re-check asked about, and what it refused."""
    calls: list[tuple[list, set]] = []
    real = hub_module.grants_refused

    def recording(*, grants):
        refused = real(grants=grants)
        calls.append((list(grants), refused))
        return refused

    monkeypatch.setattr(hub_module, "grants_refused", recording)
    return calls


async def opened(app, session, *, headers=None, query=None) -> ASGIStream:
    stream = ASGIStream(app, stream_path(session), headers=headers, query=query)
    await stream.__aenter__()
    assert stream.status == 200, stream.body
    assert (await stream.next_event()).event == "connection"
    return stream


async def rest_of(stream: ASGIStream, timeout: float = 5.0) -> list[str]:
    """The events until the stream ends (fails if it does not end within `timeout`)."""
    events = []
    async with asyncio.timeout(timeout):
        while (frame := await stream.next_event(timeout)) is not None:
            events.append(frame.event)
    return events


async def still_live(stream: ASGIStream, session, author) -> None:
    """The stream is open and delivering: a new message reaches it, nothing before it."""
    await current_hub().rechecks_done()
    await sync(services.message_create)(session=session, author=author, content="still here?")
    frame = await stream.next_event()
    assert frame.event == "message_created", frame
    assert not stream.finished.is_set()


def token_headers(token: str, scheme: str = "Token") -> dict:
    return {"Authorization": f"{scheme} {token}"}


def api_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


# --- tokens -----------------------------------------------------------------------------
async def test_logout_ends_the_streams_of_that_token_only(asgi_app, collab, bob, triggers_only):
    phone, laptop = await sync(token_for)(bob), await sync(token_for)(bob)
    on_phone = await opened(asgi_app, collab, headers=token_headers(phone, "Bearer"))
    on_laptop = await opened(asgi_app, collab, headers=token_headers(laptop))
    assert (await sync(api_with(phone).post)("/api/v1/auth/logout/")).status_code == 204
    assert await rest_of(on_phone) == ["access_revoked"]
    await still_live(on_laptop, collab, bob)
    await on_laptop.disconnect()


async def test_logout_all_ends_every_token_stream_of_the_user(asgi_app, collab, bob, carol, triggers_only):
    tokens = [await sync(token_for)(bob) for _ in range(2)]
    streams = [await opened(asgi_app, collab, headers=token_headers(t)) for t in tokens]
    carols = await opened(asgi_app, collab, headers=token_headers(await sync(token_for)(carol)))
    assert (await sync(api_with(tokens[0]).post)("/api/v1/auth/logout-all/")).status_code == 204
    for stream in streams:
        assert await rest_of(stream) == ["access_revoked"]
    await still_live(carols, collab, bob)
    await carols.disconnect()


async def test_an_expired_token_ends_its_stream_at_the_next_periodic_check(asgi_app, collab, bob, periodic_only):
    stream = await opened(asgi_app, collab, headers=token_headers(await sync(token_for)(bob)))
    past = timezone.now() - dt.timedelta(seconds=1)
    await sync(lambda: AuthToken.objects.filter(user=bob).update(expiry=past))()
    assert await rest_of(stream) == ["access_revoked"]


async def test_a_token_deleted_behind_the_apps_back_is_caught_by_the_periodic_check(
    asgi_app, collab, bob, periodic_only
):
    stream = await opened(asgi_app, collab, headers=token_headers(await sync(token_for)(bob)))
    await sync(lambda: AuthToken.objects.filter(user=bob).delete())()  # a shell, no service
    assert await rest_of(stream) == ["access_revoked"]


async def test_revoking_in_the_admin_ends_the_stream(asgi_app, collab, bob, triggers_only):
    from sessions_app.tokens import tokens_revoke

    stream = await opened(asgi_app, collab, headers=token_headers(await sync(token_for)(bob)))
    await sync(lambda: tokens_revoke(tokens=AuthToken.objects.filter(user=bob)))()
    assert await rest_of(stream) == ["access_revoked"]


# --- users ------------------------------------------------------------------------------
async def opened_by(how: str, app, api, session, user) -> ASGIStream:
    """A stream of `user` opened with an API token, the session cookie or a ticket."""
    if how == "token":
        return await opened(app, session, headers=token_headers(await sync(token_for)(user)))
    if how == "cookie":
        return await opened(app, session, headers=await cookie_header(user))
    return await opened(app, session, query={"ticket": await ticket_for(api, user, session)})


@pytest.mark.parametrize("how", ["token", "cookie", "ticket"])
async def test_deactivating_a_user_ends_their_streams_at_once(asgi_app, api, collab, bob, how, triggers_only):
    stream = await opened_by(how, asgi_app, api, collab, bob)
    bob.is_active = False
    await sync(bob.save)()  # what the admin does
    assert await rest_of(stream) == ["access_revoked"]


@pytest.mark.parametrize("how", ["token", "cookie", "ticket"])
async def test_a_user_deactivated_behind_the_apps_back_is_caught_by_the_periodic_check(
    asgi_app, api, collab, bob, how, periodic_only
):
    stream = await opened_by(how, asgi_app, api, collab, bob)
    await sync(lambda: User.objects.filter(pk=bob.pk).update(is_active=False))()  # no signal
    assert await rest_of(stream) == ["access_revoked"]


async def test_staff_who_lose_staff_status_lose_sessions_they_are_not_members_of(
    asgi_app, collab, alice, staff_user, triggers_only
):
    other = await sync(services.session_create)(owner=staff_user, title="The operator's own")
    watching = await opened(asgi_app, collab, headers=token_headers(await sync(token_for)(staff_user)))
    own = await opened(asgi_app, other, headers=token_headers(await sync(token_for)(staff_user)))
    staff_user.is_staff = False
    await sync(staff_user.save)()
    assert await rest_of(watching) == ["access_revoked"]
    await still_live(own, other, staff_user)  # a member there: stays
    await own.disconnect()


async def test_lost_staff_status_is_caught_by_the_periodic_check(asgi_app, collab, staff_user, periodic_only):
    stream = await opened(asgi_app, collab, headers=token_headers(await sync(token_for)(staff_user)))
    await sync(lambda: User.objects.filter(pk=staff_user.pk).update(is_staff=False))()
    assert await rest_of(stream) == ["access_revoked"]


async def test_a_deleted_user_loses_their_streams(asgi_app, collab, carol, triggers_only):
    stream = await opened(asgi_app, collab, headers=token_headers(await sync(token_for)(carol)))
    await sync(carol.delete)()
    events = await rest_of(stream)
    assert events[-1] == "access_revoked"


async def test_an_unrelated_save_of_the_user_keeps_the_stream(asgi_app, collab, bob, alice, triggers_only):
    stream = await opened(asgi_app, collab, headers=token_headers(await sync(token_for)(bob)))
    bob.first_name = "Robert"
    await sync(bob.save)()
    await still_live(stream, collab, alice)
    await stream.disconnect()


# --- membership: every path a member_left takes ------------------------------------------
async def test_removed_while_the_stream_was_opening(asgi_app, collab, bob, monkeypatch, triggers_only):
    """The opening query found bob a member; then he was removed and `member_left` reached
    the hub before the stream knew whose it was. It must still end."""
    real_open = stream_module.stream_open

    def open_then_lose_membership(**kwargs):
        start = real_open(**kwargs)
        services.member_remove(session=collab, username="bob")
        time.sleep(0.3)  # in the database thread: the hub dispatches member_left meanwhile
        return start

    monkeypatch.setattr(stream_module, "stream_open", open_then_lose_membership)
    stream = await opened(asgi_app, collab, headers=token_headers(await sync(token_for)(bob)))
    assert await rest_of(stream) == ["member_left", "access_revoked"]


async def test_member_left_read_in_a_catch_up_page_ends_the_stream(
    asgi_app, collab, alice, bob, monkeypatch, settings, triggers_only
):
    """Its broadcast was lost and the stream reads it from the database, in a later page
    of its replay: that path too re-checks."""
    settings.CHORUS_REPLAY_PAGE_SIZE = 2
    for n in range(3):
        await sync(services.message_create)(session=collab, author=alice, content=f"m{n}")
    real_open = stream_module.stream_open

    def open_then_lose_membership_silently(**kwargs):
        start = real_open(**kwargs)
        with broadcasts_dropped(None):
            services.member_remove(session=collab, username="bob")
        return start

    monkeypatch.setattr(stream_module, "stream_open", open_then_lose_membership_silently)
    stream = await opened(asgi_app, collab, headers={**token_headers(await sync(token_for)(bob)), "Last-Event-ID": "0"})
    events = await rest_of(stream)
    assert events[-2:] == ["member_left", "access_revoked"]
    assert events.count("message_created") == 3


async def test_member_left_that_arrives_only_through_reconciliation_ends_the_stream(
    asgi_app, collab, bob, settings, triggers_only
):
    settings.CHORUS_RECONCILE_SECONDS = 0.1
    settings.CHORUS_KEEPALIVE_SECONDS = 0.4
    stream = await opened(asgi_app, collab, headers=token_headers(await sync(token_for)(bob)))
    with broadcasts_dropped(None):
        await sync(services.member_remove)(session=collab, username="bob")
    assert await rest_of(stream) == ["member_left", "access_revoked"]


async def test_a_replayed_member_left_of_someone_added_back_keeps_the_stream(
    asgi_app, collab, alice, bob, recorded_rechecks, triggers_only
):
    await sync(services.member_remove)(session=collab, username="bob")
    await sync(services.member_add)(session=collab, username="bob", role=Role.VIEWER)
    stream = await opened(asgi_app, collab, headers={**token_headers(await sync(token_for)(bob)), "Last-Event-ID": "0"})
    replayed = []
    while len(replayed) < 5:  # member_joined x3, member_left, member_joined
        replayed.append((await stream.next_event()).event)
    assert replayed.count("member_left") == 1
    await current_hub().rechecks_done()
    assert len(recorded_rechecks) == 1  # the replayed member_left was checked ...
    assert recorded_rechecks[0][1] == set()  # ... and bob is a member again
    await still_live(stream, collab, alice)
    await stream.disconnect()


async def test_member_left_of_someone_else_keeps_the_stream(asgi_app, collab, alice, bob, triggers_only):
    stream = await opened(asgi_app, collab, headers=token_headers(await sync(token_for)(bob)))
    await sync(services.member_remove)(session=collab, username="carol")
    assert (await stream.next_event()).event == "member_left"
    await still_live(stream, collab, alice)
    await stream.disconnect()


async def test_one_batched_query_rechecks_all_streams(asgi_app, collab, alice, bob, carol, recorded_rechecks, settings):
    settings.CHORUS_STREAM_REVALIDATE_SECONDS = 0.2
    settings.CHORUS_KEEPALIVE_SECONDS = 0.4
    streams = [
        await opened(asgi_app, collab, headers=token_headers(await sync(token_for)(user)))
        for user in (alice, bob, carol, bob)
    ]
    # Periodic checks may have run while streams were still opening: the next one has all.
    async with asyncio.timeout(5):
        while not any(len(grants) == 4 for grants, _ in recorded_rechecks):
            await asyncio.sleep(0.05)
    grants, refused = next(call for call in recorded_rechecks if len(call[0]) == 4)
    assert len(grants) == 4 and refused == set()
    assert {g.user_id for g in grants} == {alice.pk, bob.pk, carol.pk}
    assert all(g.token_digest for g in grants) and all(g.session_key == str(collab.pk) for g in grants)
    for stream in streams:
        await stream.disconnect()


# --- tickets and cookies ----------------------------------------------------------------
async def test_a_ticket_stream_ends_with_the_token_that_asked_for_the_ticket(asgi_app, collab, bob, triggers_only):
    token = await sync(token_for)(bob)
    response = await sync(api_with(token).post)(f"/api/v1/sessions/{collab.pk}/stream-ticket/")
    stream = await opened(asgi_app, collab, query={"ticket": response.json()["ticket"]})
    assert (await sync(api_with(token).post)("/api/v1/auth/logout/")).status_code == 204
    assert await rest_of(stream) == ["access_revoked"]


async def test_a_ticket_of_a_token_revoked_since_does_not_open(asgi_app, collab, bob):
    token = await sync(token_for)(bob)
    ticket = (await sync(api_with(token).post)(f"/api/v1/sessions/{collab.pk}/stream-ticket/")).json()["ticket"]
    await sync(api_with(token).post)("/api/v1/auth/logout/")
    async with ASGIStream(asgi_app, stream_path(collab), query={"ticket": ticket}) as stream:
        await asyncio.wait_for(stream.finished.wait(), 5)
        assert stream.status == 401


async def test_a_ticket_asked_for_with_the_cookie_is_bound_to_the_user_only(asgi_app, collab, bob, triggers_only):
    from django.test import Client

    def ticket_with_the_cookie() -> str:
        browser = Client()
        browser.force_login(bob)
        return browser.post(f"/api/v1/sessions/{collab.pk}/stream-ticket/").json()["ticket"]

    ticket = await sync(ticket_with_the_cookie)()
    stream = await opened(asgi_app, collab, query={"ticket": ticket})
    other_token = await sync(token_for)(bob)
    assert (await sync(api_with(other_token).post)("/api/v1/auth/logout-all/")).status_code == 204
    await still_live(stream, collab, bob)
    await stream.disconnect()


async def test_logging_out_of_the_web_app_ends_that_logins_streams(asgi_app, collab, bob, triggers_only):
    from django.conf import settings
    from django.test import Client

    browser = Client()
    assert (
        await sync(browser.post)("/accounts/login/", {"username": "bob", "password": "pw-for-tests"})
    ).status_code == 302
    cookie = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"}
    this_login = await opened(asgi_app, collab, headers=cookie)
    other_login = await opened(asgi_app, collab, headers=await cookie_header(bob))
    assert (await sync(browser.post)("/accounts/logout/")).status_code in (200, 302)  # a page, or a redirect
    assert await rest_of(this_login) == ["access_revoked"]
    await still_live(other_login, collab, bob)
    await other_login.disconnect()


async def test_a_login_session_that_ends_behind_the_apps_back_ends_its_streams(asgi_app, collab, bob, periodic_only):
    from django.contrib.sessions.models import Session

    stream = await opened(asgi_app, collab, headers=await cookie_header(bob))
    await sync(lambda: Session.objects.all().delete())()  # e.g. clearsessions, or an expiry
    assert await rest_of(stream) == ["access_revoked"]


# --- password changes -------------------------------------------------------------------
def logged_in(user):
    """A browser signed in the way the web app signs in, and its cookie header."""
    from django.conf import settings
    from django.test import Client

    browser = Client()
    response = browser.post("/accounts/login/", {"username": user.username, "password": "pw-for-tests"})
    assert response.status_code == 302, "login failed"
    return browser, {"Cookie": f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"}


def cookie_of(browser) -> dict:
    from django.conf import settings

    return {"Cookie": f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"}


async def test_a_password_change_ends_the_users_other_logins_streams(asgi_app, collab, bob, periodic_only):
    """Through the admin's own form (Django's PasswordChangeView: update_session_auth_hash
    gives the changer's login a new session key and the new hash)."""
    await sync(User.objects.filter(pk=bob.pk).update)(is_staff=True)  # the admin's form is staff-only
    changer, changer_cookie = await sync(logged_in)(bob)
    _, other_cookie = await sync(logged_in)(bob)
    on_changer = await opened(asgi_app, collab, headers=changer_cookie)
    on_other = await opened(asgi_app, collab, headers=other_cookie)
    form = {"old_password": "pw-for-tests", "new_password1": "a-new-pw-4-bob", "new_password2": "a-new-pw-4-bob"}
    assert (await sync(changer.post)("/admin/password_change/", form)).status_code == 302
    assert await rest_of(on_other) == ["access_revoked"]
    # The changer's stream rested on the login's old session key, which Django replaced
    # (cycle_key): it ends too, and the changer's new cookie opens a stream that stays.
    assert await rest_of(on_changer) == ["access_revoked"]
    assert cookie_of(changer) != changer_cookie
    again = await opened(asgi_app, collab, headers=cookie_of(changer))
    await still_live(again, collab, bob)
    await again.disconnect()


async def test_a_password_changed_behind_the_apps_back_ends_cookie_streams(asgi_app, collab, bob, carol, periodic_only):
    """No signal, no doorbell: the periodic re-check compares the login's session auth hash
    with the password now stored."""
    from django.contrib.auth.hashers import make_password

    stream = await opened(asgi_app, collab, headers=await cookie_header(bob))
    carols = await opened(asgi_app, collab, headers=await cookie_header(carol))
    await sync(User.objects.filter(pk=bob.pk).update)(password=make_password("changed-in-sql"))
    assert await rest_of(stream) == ["access_revoked"]
    await still_live(carols, collab, bob)
    await carols.disconnect()


async def test_set_password_saved_with_update_fields_rings_the_doorbell(asgi_app, collab, bob, triggers_only):
    stream = await opened(asgi_app, collab, headers=await cookie_header(bob))
    token_stream = await opened(asgi_app, collab, headers=token_headers(await sync(token_for)(bob)))

    def change() -> None:
        user = User.objects.get(pk=bob.pk)
        user.set_password("a-new-pw-4-bob")
        user.save(update_fields=["password"])

    await sync(change)()
    assert await rest_of(stream) == ["access_revoked"]
    # API tokens are not logins: a password change leaves them (logout-all revokes them).
    await still_live(token_stream, collab, bob)
    await token_stream.disconnect()


def ticket_with_cookie(browser, session) -> str:
    response = browser.post(f"/api/v1/sessions/{session.pk}/stream-ticket/")
    assert response.status_code == 201, response.content
    return response.json()["ticket"]


async def test_a_ticket_asked_for_with_the_cookie_ends_with_the_password(asgi_app, collab, bob, triggers_only):
    browser, _ = await sync(logged_in)(bob)
    stream = await opened(asgi_app, collab, query={"ticket": await sync(ticket_with_cookie)(browser, collab)})
    unused = await sync(ticket_with_cookie)(browser, collab)

    def change() -> None:
        user = User.objects.get(pk=bob.pk)
        user.set_password("a-new-pw-4-bob")
        user.save()

    await sync(change)()
    assert await rest_of(stream) == ["access_revoked"]
    # A ticket issued before the change, still within its minute, no longer opens.
    async with ASGIStream(asgi_app, stream_path(collab), query={"ticket": unused}) as refused:
        await asyncio.wait_for(refused.finished.wait(), 5)
        assert refused.status == 401
