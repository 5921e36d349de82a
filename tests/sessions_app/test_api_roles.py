"""The role rules of CONTRACT §2 across every session endpoint: a non-member gets 404 for
everything (existence is not revealed), a viewer 403 on writes, no credentials 401, staff
may read every session."""

import pytest

from realtime.models import Event

pytestmark = pytest.mark.django_db

# (method, path under the session, body, what it needs, status on success)
ENDPOINTS = [
    ("get", "", None, "read", 200),
    ("get", "messages/", None, "read", 200),
    ("get", "events/", None, "read", 200),
    ("post", "stream-ticket/", None, "read", 201),
    ("post", "messages/", {"content": "hi"}, "write", 201),
    ("patch", "", {"title": "New"}, "own", 200),
    ("post", "members/", {"username": "dave", "role": "viewer"}, "own", 201),
    ("delete", "members/carol/", None, "own", 204),
    ("delete", "", None, "own", 204),
]

# What each kind of caller may do.
ALLOWED = {
    "alice": {"read", "write", "own"},  # owner
    "bob": {"read", "write"},  # editor
    "carol": {"read"},  # viewer
    "staff_user": {"read"},  # staff, not a member
}


def expected_status(who: str, need: str, success: int) -> int:
    if who == "anonymous":
        return 401
    if who == "outsider":
        return 404
    return success if need in ALLOWED[who] else 403


@pytest.mark.parametrize(
    "method, suffix, body, need, success", ENDPOINTS, ids=[f"{m} {s or '.'}" for m, s, *_ in ENDPOINTS]
)
@pytest.mark.parametrize("who", ["alice", "bob", "carol", "staff_user", "outsider", "anonymous"])
def test_role_matrix(api, request, collab, make_user, who, method, suffix, body, need, success):
    make_user("dave")
    user = None if who == "anonymous" else request.getfixturevalue(who)
    events_before = Event.objects.filter(session=collab).count()
    response = getattr(api(user), method)(f"/api/v1/sessions/{collab.pk}/{suffix}", body, format="json")
    status = expected_status(who, need, success)
    assert response.status_code == status, response.content
    if status >= 400:
        assert isinstance(response.json()["detail"], str)
        assert Event.objects.filter(session=collab).count() == events_before
    if who == "outsider":
        assert response.json() == {"detail": "Not found."}
    if who == "anonymous":
        assert response["WWW-Authenticate"].startswith("Token")
