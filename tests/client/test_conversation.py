"""Conversation: messages rebuilt from events, idempotently."""

from __future__ import annotations

import datetime as dt

from chorus_client import Conversation, Event
from tests.client.fake_server import SESSION

NOW = dt.datetime(2026, 11, 21, 10, tzinfo=dt.UTC)


def ev(seq: int, type_: str, **data) -> Event:
    return Event(id=seq, type=type_, session_id=SESSION, timestamp=NOW, data=data)


def progress(seq: int, offset: int, delta: str, pct: int = 50) -> Event:
    return ev(seq, "regeneration_progress", messageId="a1", taskId="t", progress=pct, offset=offset, delta=delta)


ANSWER = "Voilà, a plan 🚀 for ünïcode — done. 👍"


def answer_events(start: int = 2) -> list[Event]:
    pieces = ["Voilà, a plan 🚀", " for ünïcode", " — done. 👍"]
    events = [
        ev(start, "message_regenerating", messageId="a1", originalMessageId=None, taskId="t", regenerationId="r1"),
    ]
    offset = 0
    for n, piece in enumerate(pieces):
        events.append(progress(start + 1 + n, offset, piece, pct=(n + 1) * 30))
        offset += len(piece)  # code points: what the server counts, and what str counts
    events.append(ev(start + 4, "message_regenerated", messageId="a1", taskId="t", content=ANSWER))
    return events


def test_a_streamed_answer_is_rebuilt_by_offset():
    conversation = Conversation()
    conversation.apply(ev(1, "message_created", messageId="u1", role="user", author="alice", content="plan?"))
    events = answer_events()
    for event in events[:-1]:
        message = conversation.apply(event)
    assert message.content == ANSWER and message.status == "streaming" and message.progress == 90
    final = conversation.apply(events[-1])
    assert final.content == ANSWER and final.status == "complete"
    assert [(m.id, m.role, m.author) for m in conversation] == [("u1", "user", "alice"), ("a1", "assistant", None)]


def test_duplicate_and_stale_progress_frames_change_nothing():
    conversation = Conversation()
    events = answer_events()[:-1]
    for event in events:
        conversation.apply(event)
    # The same events again (a replay overlap): ignored by id.
    for event in events:
        assert conversation.apply(event) is None
    assert conversation.get("a1").content == ANSWER
    # The same deltas under new ids (a client that rebuilt from REST, then replays), in
    # any order: placed by offset, so nothing doubles and nothing is cut.
    for n, event in enumerate(reversed(events[1:]), start=100):
        conversation.apply(progress(n, event.data["offset"], event.data["delta"]))
    assert conversation.get("a1").content == ANSWER


def test_progress_replaces_text_after_its_offset():
    conversation = Conversation()
    conversation.apply(progress(1, 0, "Hello wrld"))
    conversation.apply(progress(2, 6, "world"))
    assert conversation.get("a1").content == "Hello world"


def test_progress_past_the_known_text_is_a_gap_until_the_final_content():
    conversation = Conversation.from_messages(
        [{"id": "a1", "role": "assistant", "author": None, "content": "Voilà"}], last_event_id=10
    )
    message = conversation.apply(progress(11, 20, "later text"))
    assert message.gap is True and message.content == "Voilà"
    message = conversation.apply(ev(12, "message_regenerated", messageId="a1", taskId="t", content=ANSWER))
    assert message.gap is False and message.content == ANSWER


def test_loaded_messages_continue_with_the_events_after_them():
    loaded = [
        {"id": "u1", "role": "user", "author": "alice", "content": "plan?"},
        {"id": "a1", "role": "assistant", "author": None, "content": "Voilà, a plan 🚀"},  # mid-answer
    ]
    conversation = Conversation.from_messages(loaded, last_event_id=3)
    for event in answer_events():
        conversation.apply(event)  # ids 2 and 3 are older than the load: skipped
    assert conversation.get("a1").content == ANSWER
    assert [m.id for m in conversation] == ["u1", "a1"]


def test_edits_deletions_errors_and_the_session():
    conversation = Conversation()
    conversation.apply(ev(1, "member_joined", username="alice", role="owner"))
    conversation.apply(ev(2, "message_created", messageId="u1", role="user", author="alice", content="first"))
    conversation.apply(ev(3, "message_created", messageId="u2", role="user", author="alice", content="second"))
    conversation.apply(ev(4, "message_edited", messageId="u1", role="user", author="alice", content="first!"))
    conversation.apply(ev(5, "message_deleted", deletedMessageIds=["u2"]))
    conversation.apply(ev(6, "session_updated", title="Renamed"))
    conversation.apply(ev(7, "message_regenerating", messageId="a1", originalMessageId=None, taskId="t"))
    failed = conversation.apply(ev(8, "regeneration_error", messageId="a1", taskId="t", error="The model is down."))
    conversation.apply(ev(9, "system", message="maintenance at 10"))  # not about messages: ignored
    assert [(m.id, m.content) for m in conversation] == [("u1", "first!"), ("a1", "")]
    assert failed.status == "failed" and failed.error == "The model is down."
    assert conversation.title == "Renamed" and conversation.members == {"alice": "owner"}
    assert conversation.last_event_id == 9
