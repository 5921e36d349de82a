"""follow(): reconnection, waits, dedupe and control frames, against a scripted server
(httpx.MockTransport). Every test runs the sync and the async client."""

from __future__ import annotations

import random

import httpx
import pytest

from chorus_client import (
    AccessRevoked,
    Backoff,
    Connected,
    ConnectionFailed,
    ControlEvent,
    Event,
    HistoryTruncated,
    NotFound,
    Unauthorized,
)
from chorus_client._follow import FollowState
from tests.client.fake_server import (
    KEEPALIVE,
    RETRY,
    SESSION,
    FakeServer,
    StopFollowing,
    connection,
    control,
    follow,
    refuse,
    stored,
    stream,
)


@pytest.fixture(params=["sync", "async"])
def flavor(request) -> str:
    return request.param


def ids(items) -> list[int]:
    return [item.id for item in items if isinstance(item, Event)]


def test_events_are_typed_and_control_frames_surface_as_their_own_types(flavor):
    server = FakeServer(
        [
            stream(
                RETRY,
                connection(3),
                control("history_truncated", requested=0, oldestAvailable=2),
                stored(2, "message_created", messageId="m1", role="user", author="alice", content="hi"),
                KEEPALIVE,
                control("presence", online=["alice"]),
                control("typing", username="bob", typing=True, expiresIn=6),
                stored(3, "session_updated", title="Plans"),
            )
        ]
    )
    items, _, error = follow(flavor, server, last_event_id=0)
    assert isinstance(error, StopFollowing)
    kinds = [(type(item).__name__, item.type) for item in items]
    assert kinds == [
        ("Connected", "connection"),
        ("HistoryTruncated", "history_truncated"),
        ("Event", "message_created"),
        ("ControlEvent", "presence"),
        ("ControlEvent", "typing"),
        ("Event", "session_updated"),
    ]
    connected, truncated, created, presence = items[0], items[1], items[2], items[3]
    assert isinstance(connected, Connected) and connected.last_event_id == 3 and connected.session_id == SESSION
    assert isinstance(truncated, HistoryTruncated) and (truncated.requested, truncated.oldest_available) == (0, 2)
    assert created.id == 2 and created.session_id == SESSION and created.data["content"] == "hi"
    assert created.timestamp.utcoffset().total_seconds() == 0
    assert isinstance(presence, ControlEvent) and presence.data == {"online": ["alice"]}
    # The unnumbered presence frame came after id 2 and httpx-sse reports id "2" for it:
    # it must still not be taken for a stored event (nor dropped as a repeat).


def test_reconnects_with_last_event_id_and_never_yields_an_id_twice(flavor):
    server = FakeServer(
        [
            stream(RETRY, connection(3), stored(1), stored(2), stored(3)),  # ends cleanly
            # A replay that overlaps (a proxy, a buggy server) and a repeat: dropped.
            stream(RETRY, connection(5), stored(2), stored(3), stored(4), stored(4), stored(5)),
        ]
    )
    items, _, error = follow(flavor, server, last_event_id=0)
    assert isinstance(error, StopFollowing)
    assert ids(items) == [1, 2, 3, 4, 5]
    sent = [r.headers.get("last-event-id") for r in server.stream_requests]
    assert sent == ["0", "3", "5"]


def test_without_a_start_id_it_resumes_from_the_connection_frames_newest_id(flavor):
    server = FakeServer([stream(RETRY, connection(7)), stream(RETRY, connection(9), stored(8), stored(9))])
    items, _, _ = follow(flavor, server)
    assert ids(items) == [8, 9]
    assert [r.headers.get("last-event-id") for r in server.stream_requests] == [None, "7", "9"]


def test_a_given_start_id_drops_older_ids(flavor):
    server = FakeServer([stream(RETRY, connection(6), stored(4), stored(5), stored(6))])
    items, _, _ = follow(flavor, server, last_event_id=4)
    assert ids(items) == [5, 6]


def test_waits_the_servers_retry_after_a_stream_ends(flavor):
    server = FakeServer(
        [
            stream(b"retry: 1234\n\n", connection(0)),
            stream(b"retry: 250\n\n", connection(0)),
            stream(connection(0)),
        ]
    )
    _, sleeps, _ = follow(flavor, server, backoff=Backoff(initial=5.0))
    assert sleeps == [1.234, 0.25, 0.25]


def test_failures_back_off_exponentially_with_bounded_jitter(flavor):
    refused = httpx.ConnectError("connection refused")
    server = FakeServer([stream(b"retry: 100\n\n", connection(0)), *[refused] * 8])
    backoff = Backoff(initial=9.0, maximum=1.0, multiplier=2.0, jitter=0.5)
    _, sleeps, _ = follow(flavor, server, backoff=backoff)
    assert sleeps[0] == pytest.approx(0.1)  # the clean end: the server's retry
    failures = sleeps[1:]
    assert len(failures) == 8
    for n, wait in enumerate(failures, start=1):
        floor = min(1.0, 0.1 * 2 ** (n - 1))  # from the server's retry, doubling, capped
        assert floor <= wait <= floor * 1.5, (n, wait)
    assert max(failures) <= 1.5


def test_gives_up_after_max_attempts(flavor):
    server = FakeServer([httpx.ConnectError("refused")] * 5)
    _, sleeps, error = follow(flavor, server, backoff=Backoff(initial=0.1, max_attempts=3))
    assert isinstance(error, ConnectionFailed)
    assert len(server.stream_requests) == 3 and len(sleeps) == 2


def test_a_broken_stream_and_a_silent_one_reconnect_and_resume(flavor):
    server = FakeServer(
        [
            stream(RETRY, connection(2), stored(1), error=httpx.RemoteProtocolError("incomplete chunked read")),
            stream(RETRY, connection(2), stored(2), KEEPALIVE, error=httpx.ReadTimeout("silent for too long")),
            refuse(503, "The event stream is unavailable; retry later."),
            stream(RETRY, connection(3), stored(3)),
        ]
    )
    items, sleeps, _ = follow(flavor, server, last_event_id=0)
    assert ids(items) == [1, 2, 3]
    assert [r.headers.get("last-event-id") for r in server.stream_requests] == ["0", "1", "2", "2", "3"]
    assert len(sleeps) == 4 and all(s >= 3.0 for s in sleeps)


def test_a_429_waits_at_least_its_retry_after(flavor):
    server = FakeServer([refuse(429, "slow down", {"Retry-After": "7"}), stream(RETRY, connection(0))])
    _, sleeps, _ = follow(flavor, server)
    assert sleeps[0] >= 7


def test_logs_in_again_on_a_401_and_keeps_following(flavor):
    server = FakeServer(
        [
            stream(RETRY, connection(1), stored(1)),
            refuse(401, "Invalid token."),  # the token expired meanwhile
            stream(RETRY, connection(2), stored(2)),
        ]
    )
    items, _, _ = follow(flavor, server, last_event_id=0, username="alice", password="pw")
    assert ids(items) == [1, 2]
    assert server.logins == 2
    auth = [r.headers.get("authorization") for r in server.stream_requests]
    assert auth == ["Token t1", "Token t1", "Token t2", "Token t2"]


def test_a_401_without_credentials_or_after_a_fresh_login_is_final(flavor):
    server = FakeServer([refuse(401, "Invalid token.")])
    _, _, error = follow(flavor, server)
    assert isinstance(error, Unauthorized) and error.detail == "Invalid token."

    server = FakeServer([refuse(401, "Invalid token."), refuse(401, "Invalid token.")])
    _, _, error = follow(flavor, server, username="alice", password="pw")
    assert isinstance(error, Unauthorized) and server.logins == 2  # first use, then once more


def test_wrong_password_is_final(flavor):
    _, _, error = follow(flavor, FakeServer([]), username="alice", password="nope")
    assert isinstance(error, Unauthorized) and "Unable to log in" in error.detail


def test_access_revoked_ends_the_iteration_when_access_is_gone(flavor):
    server = FakeServer(
        [
            stream(RETRY, connection(1), stored(1), control("access_revoked", sessionId=SESSION)),
            refuse(404, "Not found."),
        ]
    )
    items, _, error = follow(flavor, server, last_event_id=0)
    assert ids(items) == [1]
    assert isinstance(error, AccessRevoked)
    assert error.session_id == SESSION and error.last_event_id == 1
    assert isinstance(error.__cause__, NotFound)


def test_access_revoked_for_an_expired_token_is_survived_by_logging_in(flavor):
    server = FakeServer(
        [
            stream(RETRY, connection(1), stored(1), control("access_revoked", sessionId=SESSION), stored(99)),
            refuse(401, "Token has expired."),
            stream(RETRY, connection(2), stored(2)),
        ]
    )
    items, sleeps, error = follow(flavor, server, last_event_id=0, username="alice", password="pw")
    assert isinstance(error, StopFollowing)
    assert ids(items) == [1, 2]  # nothing after access_revoked is read from that stream
    assert sleeps == [3.0]  # only after the last stream: access_revoked is checked at once
    assert server.logins == 2


def test_access_revoked_again_right_after_reopening_is_final(flavor):
    revoked = control("access_revoked", sessionId=SESSION)
    server = FakeServer(
        [
            stream(RETRY, connection(1), stored(1), revoked),
            stream(RETRY, connection(1), revoked),  # let in, and revoked at once: no loop
            stream(RETRY, connection(1), stored(2)),
        ]
    )
    items, sleeps, error = follow(flavor, server, last_event_id=0)
    assert isinstance(error, AccessRevoked) and error.last_event_id == 1
    assert ids(items) == [1] and len(server.stream_requests) == 2 and sleeps == []


def test_refused_from_the_start_raises_the_typed_error(flavor):
    _, _, error = follow(flavor, FakeServer([refuse(404, "Not found.")]))
    assert isinstance(error, NotFound) and error.status == 404


def test_backoff_delay_bounds_and_jitter():
    backoff = Backoff(initial=0.5, maximum=8.0, multiplier=2.0, jitter=0.25)
    rng = random.Random(7)
    for failures in range(1, 12):
        floor = min(8.0, 3.0 * 2 ** (failures - 1))
        waits = {backoff.delay(failures=failures, base=3.0, rng=rng) for _ in range(50)}
        assert all(floor <= w <= floor * 1.25 for w in waits)
        assert len(waits) > 1  # jittered, not one value
    assert backoff.delay(failures=0, base=3.0, rng=rng) == 3.0


def test_negative_start_id_is_refused():
    with pytest.raises(ValueError):
        FollowState(session_id=SESSION, last_event_id=-1, backoff=Backoff())
