"""Publishing (issue 2, point 4; STYLE §3 and §4): gapless per-session ids under concurrent
writers, events sent only after commit, every payload builder JSON-safe, unknown types refused.

The concurrency test runs on whatever DATABASE_URL names: SQLite by default, and PostgreSQL
with `DATABASE_URL=postgres://... pytest tests/realtime/test_publish.py` (as .ci/run does).
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import threading
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from realtime import events, publish
from realtime.events import EventPayload, EventType
from realtime.models import Event
from realtime.publish import broadcast_message, event_publish
from sessions_app import services
from sessions_app.models import CollabSession, Message


def seqs(session) -> list[int]:
    return list(Event.objects.filter(session=session).order_by("seq").values_list("seq", flat=True))


# --- gapless ids under concurrent writers ----------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_get_gapless_ids_and_readers_never_see_a_hole(collab, bob):
    writers, per_writer = 8, 25
    start = collab.last_event_id  # the `member_joined` events of the fixture
    barrier = threading.Barrier(writers + 1)
    done = threading.Event()
    errors: list[BaseException] = []
    holes: list[list[int]] = []

    def write(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(per_writer):
                services.message_create(session=collab, author=bob, content=f"w{index}-{i}")
        except BaseException as exc:  # a "database is locked" must fail the test, not vanish
            errors.append(exc)
        finally:
            connection.close()

    def read() -> None:
        """Readers must never see id N+1 before N: what is visible is always 1..max."""
        try:
            barrier.wait(timeout=10)
            while not done.is_set():
                visible = seqs(collab)
                if visible != list(range(1, len(visible) + 1)):
                    holes.append(visible)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    reader = threading.Thread(target=read)
    for thread in [*threads, reader]:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    done.set()
    reader.join(timeout=10)

    assert not any(t.is_alive() for t in [*threads, reader]), "a writer hung"
    assert errors == []
    assert holes == []
    total = start + writers * per_writer
    assert seqs(collab) == list(range(1, total + 1))
    collab.refresh_from_db()
    assert collab.last_event_id == total
    assert Message.objects.filter(session=collab).count() == writers * per_writer
    # Each message has exactly one event, and it names that message.
    created = Event.objects.filter(session=collab, type="message_created").values_list("data", flat=True)
    assert sorted(d["messageId"] for d in created) == sorted(
        str(pk) for pk in Message.objects.filter(session=collab).values_list("pk", flat=True)
    )


@pytest.mark.django_db(transaction=True)
def test_sessions_number_their_events_independently(alice):
    first = services.session_create(owner=alice, title="one")
    second = services.session_create(owner=alice, title="two")
    for i in range(3):
        services.message_create(session=first, author=alice, content=f"a{i}")
    services.message_create(session=second, author=alice, content="b")
    assert seqs(first) == [1, 2, 3, 4]
    assert seqs(second) == [1, 2]


# --- after commit -------------------------------------------------------------------------------
@pytest.fixture
def sent(monkeypatch) -> list[tuple[uuid.UUID, dict]]:
    """What publish hands to the channel layer, recorded instead of sent."""
    calls: list[tuple[uuid.UUID, dict]] = []
    monkeypatch.setattr("realtime.publish.broadcast", lambda session_id, message: calls.append((session_id, message)))
    return calls


@pytest.mark.django_db(transaction=True)
def test_an_event_is_sent_only_after_commit(collab, sent):
    newest = collab.last_event_id
    with transaction.atomic():
        event_publish(session_id=collab.pk, payload=events.system(message="hello"))
        assert sent == [], "sent before commit: a stream could see an id the database does not have"
    assert [(sid, m["seq"], m["event"]) for sid, m in sent] == [(collab.pk, newest + 1, "system")]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_event_is_never_sent_and_leaves_no_gap(collab, sent):
    newest = collab.last_event_id
    with pytest.raises(RuntimeError), transaction.atomic():
        event_publish(session_id=collab.pk, payload=events.system(message="never"))
        raise RuntimeError("the caller's transaction fails")
    assert sent == []
    collab.refresh_from_db()
    assert collab.last_event_id == newest
    assert seqs(collab) == list(range(1, newest + 1))
    after = event_publish(session_id=collab.pk, payload=events.system(message="next"))
    assert after.seq == newest + 1
    assert [m["seq"] for _, m in sent] == [newest + 1]


@pytest.mark.django_db(transaction=True)
def test_an_event_in_a_rolled_back_savepoint_is_dropped_but_the_outer_one_is_sent(collab, sent):
    newest = collab.last_event_id
    with transaction.atomic():
        event_publish(session_id=collab.pk, payload=events.system(message="kept"))
        try:
            with transaction.atomic():
                event_publish(session_id=collab.pk, payload=events.system(message="dropped"))
                raise RuntimeError
        except RuntimeError:
            pass
        event_publish(session_id=collab.pk, payload=events.system(message="also kept"))
    stored = list(Event.objects.filter(session=collab, seq__gt=newest).order_by("seq").values_list("seq", "data"))
    assert stored == [(newest + 1, {"message": "kept"}), (newest + 2, {"message": "also kept"})]
    assert [m["seq"] for _, m in sent] == [newest + 1, newest + 2]


@pytest.mark.django_db(transaction=True)
def test_a_failed_service_stores_nothing_and_sends_nothing(collab, bob, sent):
    newest = collab.last_event_id
    with pytest.raises(ValidationError):
        services.message_create(session=collab, author=bob, content="x", role="robot")
    assert sent == []
    collab.refresh_from_db()
    assert collab.last_event_id == newest
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_publishing_to_an_unknown_session_raises_and_stores_nothing(collab, sent):
    with pytest.raises(LookupError):
        event_publish(session_id=uuid.uuid4(), payload=events.system(message="nowhere"))
    assert sent == []
    assert Event.objects.count() == collab.last_event_id


# --- event types --------------------------------------------------------------------------------
SAMPLE_ARGS = {
    "username": "bob",
    "role": "editor",
    "message_id": str(uuid.uuid4()),
    "original_message_id": str(uuid.uuid4()),
    "task_id": "task-1",
    "regeneration_id": str(uuid.uuid4()),
    "user_query": "why? ✨",
    "author": "bob",
    "content": 'line one\nline "two" \u2028 👋',
    "deleted_message_ids": [str(uuid.uuid4()), str(uuid.uuid4())],
    "progress": 42,
    "offset": 7,
    "delta": "tok\u00e9n",
    "error": "The model is unavailable.",
    "thinking_about": "the question",
    "step": 2,
    "reasoning": "because",
    "conclusion": "therefore",
    "title": "A title",
    "message": "A notice",
}


def _builders():
    """Every public payload builder of realtime.events, called with sample arguments."""
    built = {}
    for name, builder in inspect.getmembers(events, inspect.isfunction):
        if builder.__module__ != events.__name__ or name.startswith("_"):
            continue
        if inspect.signature(builder).return_annotation not in (EventPayload, "EventPayload"):
            continue
        params = inspect.signature(builder).parameters
        built[name] = builder(**{p: SAMPLE_ARGS[p] for p in params})
    return built


def test_every_event_type_has_exactly_one_builder():
    built = _builders()
    assert sorted(p.type.value for p in built.values()) == sorted(t.value for t in EventType)
    assert all(name == payload.type.value for name, payload in built.items())


@pytest.mark.parametrize("name", sorted(t.value for t in EventType))
def test_every_payload_round_trips_through_json(name):
    payload = _builders()[name]
    assert isinstance(payload.type, EventType)
    assert json.loads(json.dumps(payload.data)) == payload.data
    assert all(key == key[0].lower() + key[1:] and "_" not in key for key in payload.data), "camelCase keys"


@pytest.mark.parametrize("name", sorted(t.value for t in EventType))
@pytest.mark.django_db(transaction=True)
def test_every_stored_event_and_its_broadcast_round_trip_through_json(collab, sent, name):
    payload = _builders()[name]
    event = event_publish(session_id=collab.pk, payload=payload)
    event.refresh_from_db()
    assert event.data == payload.data
    [(_, message)] = sent
    assert json.loads(json.dumps(message)) == message  # what Redis would carry
    envelope = json.loads(message["envelope"])
    assert envelope == {
        "id": event.seq,
        "type": name,
        "sessionId": str(collab.pk),
        "timestamp": envelope["timestamp"],
        "data": payload.data,
    }
    assert envelope["timestamp"].endswith("Z")
    assert "\n" not in message["envelope"], "an envelope must fit one SSE data: line"
    # The stored row frames the same event (PostgreSQL's jsonb may reorder the keys).
    again = broadcast_message(event)
    assert json.loads(again.pop("envelope")) == envelope
    assert again | {"publishedAt": message["publishedAt"]} == {k: v for k, v in message.items() if k != "envelope"}


def test_timestamps_are_utc_with_milliseconds():
    moment = dt.datetime(2026, 11, 21, 11, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert events.iso_timestamp(moment) == "2026-11-21T10:00:00.123Z"


@pytest.mark.parametrize("bad_type", ["bogus", "member_joined", "evil\nid: 99"])
@pytest.mark.django_db(transaction=True)
def test_an_unknown_event_type_is_refused(collab, sent, bad_type):
    newest = collab.last_event_id
    with pytest.raises(ValueError):
        event_publish(session_id=collab.pk, payload=EventPayload(bad_type, {}))
    assert sent == []
    collab.refresh_from_db()
    assert collab.last_event_id == newest
    assert Event.objects.filter(session=collab).count() == newest


@pytest.mark.django_db
def test_the_database_refuses_an_unknown_type_too(collab):
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.create(session=collab, seq=collab.last_event_id + 1, type="bogus", data={})


@pytest.mark.django_db
def test_the_database_refuses_a_duplicate_id(collab):
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.create(session=collab, seq=1, type="system", data={"message": "again"})
    assert CollabSession.objects.get(pk=collab.pk).last_event_id == collab.last_event_id


@pytest.mark.django_db
def test_stored_envelope_is_what_the_stream_and_polling_send(collab, bob):
    """Replay frames the stored envelope without re-encoding it: it must equal the polling
    fallback's envelope and the one broadcast live."""
    from realtime.models import Event
    from realtime.publish import broadcast_message
    from realtime.replay import event_envelope

    services.message_create(session=collab, author=bob, content='héllo 👋 \n"quoted"')
    event = Event.objects.filter(session=collab).order_by("-seq").first()
    assert json.loads(event.envelope) == event_envelope(event)
    assert broadcast_message(event)["envelope"] == event.envelope
    assert "\n" not in event.envelope


@pytest.mark.django_db(transaction=True)
async def test_publishing_from_a_request_thread_does_not_wait_for_the_channel_layer(collab, bob):
    """In a server process the broadcast is handed to the server's loop, not awaited by the
    request thread: a slow channel layer must not hold the thread (or its transaction)."""
    import asyncio

    from channels.db import database_sync_to_async

    from realtime.hub import get_hub

    await get_hub().start()
    release = asyncio.Event()
    sent = []
    real_group_send = publish._group_send  # the layer's group_send, or the Redis publisher

    async def slow_group_send(layer, group, message):
        await release.wait()
        sent.append(message["seq"])
        await real_group_send(layer, group, message)

    publish._group_send = slow_group_send
    try:
        await asyncio.wait_for(
            database_sync_to_async(services.message_create)(session=collab, author=bob, content="x"), 5
        )
        assert sent == []  # the service returned while the send still waits
        release.set()
        async with asyncio.timeout(5):
            while not sent:
                await asyncio.sleep(0.01)
    finally:
        publish._group_send = real_group_send
