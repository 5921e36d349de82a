"""Members over REST (CONTRACT §3): the owner adds and removes; events member_joined/left."""

import pytest

from realtime.models import Event
from sessions_app.models import Membership

pytestmark = pytest.mark.django_db


def members_url(session) -> str:
    return f"/api/v1/sessions/{session.pk}/members/"


def member_url(session, username: str) -> str:
    return f"/api/v1/sessions/{session.pk}/members/{username}/"


def last_event(session) -> tuple[int, str, dict]:
    return Event.objects.filter(session=session).order_by("-seq").values_list("seq", "type", "data").first()


def test_owner_adds_a_member_and_member_joined_is_emitted(api, collab, alice, outsider):
    before = collab.last_event_id
    response = api(alice).post(members_url(collab), {"username": "mallory", "role": "viewer"}, format="json")
    assert response.status_code == 201
    assert response.json() == {"username": "mallory", "role": "viewer"}
    assert Membership.objects.get(session=collab, user=outsider).role == "viewer"
    assert last_event(collab) == (before + 1, "member_joined", {"username": "mallory", "role": "viewer"})
    collab.refresh_from_db()
    assert collab.last_event_id == before + 1
    # The new member now sees the session, with their role.
    body = api(outsider).get(f"/api/v1/sessions/{collab.pk}/").json()
    assert body["role"] == "viewer"
    assert {"username": "mallory", "role": "viewer", "lastReadEventId": 0} in body["members"]


def test_owner_adds_an_editor_who_may_then_write(api, collab, alice, outsider):
    api(alice).post(members_url(collab), {"username": "mallory", "role": "editor"}, format="json")
    response = api(outsider).post(f"/api/v1/sessions/{collab.pk}/messages/", {"content": "hi"}, format="json")
    assert response.status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"username": "mallory", "role": "owner"},  # a session has one owner
        {"username": "mallory", "role": "admin"},
        {"username": "mallory"},
        {"role": "viewer"},
        {"username": "nobody-by-that-name", "role": "viewer"},
        {"username": "bob", "role": "viewer"},  # already a member
        {"username": "alice", "role": "editor"},  # the owner
    ],
)
def test_bad_additions_are_400_and_change_nothing(api, collab, alice, outsider, body):
    before = collab.last_event_id
    memberships = list(Membership.objects.filter(session=collab).values_list("user__username", "role"))
    response = api(alice).post(members_url(collab), body, format="json")
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    assert list(Membership.objects.filter(session=collab).values_list("user__username", "role")) == memberships
    collab.refresh_from_db()
    assert collab.last_event_id == before


def test_an_inactive_user_cannot_be_added(api, collab, alice, outsider):
    outsider.is_active = False
    outsider.save()
    response = api(alice).post(members_url(collab), {"username": "mallory", "role": "viewer"}, format="json")
    assert response.status_code == 400


@pytest.mark.parametrize("who, status", [("bob", 403), ("carol", 403), ("outsider", 404), ("staff_user", 403)])
def test_only_the_owner_adds_members(api, collab, make_user, request, who, status):
    make_user("dave")
    before = collab.last_event_id
    response = api(request.getfixturevalue(who)).post(
        members_url(collab), {"username": "dave", "role": "viewer"}, format="json"
    )
    assert response.status_code == status
    assert not Membership.objects.filter(session=collab, user__username="dave").exists()
    collab.refresh_from_db()
    assert collab.last_event_id == before


def test_adding_needs_credentials(api, collab):
    assert api().post(members_url(collab), {"username": "bob", "role": "viewer"}, format="json").status_code == 401


# --- removal ----------------------------------------------------------------------------
def test_owner_removes_a_member_and_member_left_is_emitted(api, collab, alice, bob):
    before = collab.last_event_id
    response = api(alice).delete(member_url(collab, "bob"))
    assert response.status_code == 204
    assert not Membership.objects.filter(session=collab, user=bob).exists()
    assert last_event(collab) == (before + 1, "member_left", {"username": "bob", "role": "editor"})
    # Removed means a stranger: the session is no longer revealed to them.
    assert api(bob).get(f"/api/v1/sessions/{collab.pk}/").status_code == 404
    assert api(bob).get(f"/api/v1/sessions/{collab.pk}/events/").status_code == 404


def test_removing_a_viewer_records_their_role(api, collab, alice):
    api(alice).delete(member_url(collab, "carol"))
    assert last_event(collab)[1:] == ("member_left", {"username": "carol", "role": "viewer"})


def test_the_owner_cannot_be_removed(api, collab, alice):
    before = collab.last_event_id
    response = api(alice).delete(member_url(collab, "alice"))
    assert response.status_code == 400
    assert "owner" in response.json()["detail"]
    assert Membership.objects.filter(session=collab, user=alice).exists()
    collab.refresh_from_db()
    assert collab.last_event_id == before


@pytest.mark.parametrize("username", ["mallory", "nobody-by-that-name", "bob%00", "BOB"])
def test_removing_someone_who_is_not_a_member_is_404(api, collab, alice, outsider, username):
    before = collab.last_event_id
    response = api(alice).delete(member_url(collab, username))
    assert response.status_code == 404
    assert "detail" in response.json()
    collab.refresh_from_db()
    assert collab.last_event_id == before


@pytest.mark.parametrize("who, status", [("bob", 403), ("carol", 403), ("outsider", 404), ("staff_user", 403)])
def test_only_the_owner_removes_members(api, collab, request, who, status):
    response = api(request.getfixturevalue(who)).delete(member_url(collab, "carol"))
    assert response.status_code == status
    assert Membership.objects.filter(session=collab, user__username="carol").exists()


def test_a_member_cannot_remove_themselves_unless_owner(api, collab, carol):
    # Leaving is an owner's decision in this API: a viewer's removal of themselves is a write.
    assert api(carol).delete(member_url(collab, "carol")).status_code == 403


def test_removal_needs_credentials(api, collab):
    assert api().delete(member_url(collab, "bob")).status_code == 401


# --- concurrent changes of one membership --------------------------------------------------
def _at_once(count: int, action) -> list[BaseException | None]:
    """Runs `action()` in `count` threads released together; what each raised (or None)."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(count)
    outcomes: list[BaseException | None] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            action()
        except BaseException as exc:
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_concurrent_additions_of_one_user_make_one_member_and_one_event(collab, outsider):
    from sessions_app import services

    outcomes = _at_once(6, lambda: services.member_add(session=collab, username="mallory", role="viewer"))
    assert sum(o is None for o in outcomes) == 1
    assert all(isinstance(o, services.ServiceError) for o in outcomes if o is not None), outcomes
    assert Membership.objects.filter(session=collab, user=outsider).count() == 1
    assert Event.objects.filter(session=collab, type="member_joined", data__username="mallory").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_removals_of_one_member_emit_one_member_left(collab):
    from sessions_app import services

    outcomes = _at_once(6, lambda: services.member_remove(session=collab, username="carol"))
    assert sum(o is None for o in outcomes) == 1
    assert all(isinstance(o, services.MemberNotFound) for o in outcomes if o is not None), outcomes
    assert Event.objects.filter(session=collab, type="member_left").count() == 1


@pytest.mark.django_db(transaction=True)
def test_membership_changes_beside_message_writers_neither_deadlock_nor_leave_gaps(collab, bob, make_user):
    import itertools

    from sessions_app import services

    names = [make_user(f"guest{i}").username for i in range(3)]
    counter = itertools.count()

    def work() -> None:
        index = next(counter)
        if index < len(names):  # these threads churn memberships, the rest post messages
            for _ in range(5):
                services.member_add(session=collab, username=names[index], role="viewer")
                services.member_remove(session=collab, username=names[index])
        else:
            for i in range(10):
                services.message_create(session=collab, author=bob, content=f"m{i}")

    outcomes = _at_once(len(names) + 4, work)
    assert outcomes == [None] * (len(names) + 4)
    collab.refresh_from_db()
    seqs = list(Event.objects.filter(session=collab).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, collab.last_event_id + 1))
    assert collab.last_event_id == 3 + len(names) * 10 + 4 * 10
