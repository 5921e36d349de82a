"""A Python client for Chorus: the REST API and the event stream, sync and async.

Importing it needs neither Django nor the server's code: only httpx and httpx-sse.

    from chorus_client import Client

    with Client("http://127.0.0.1:8000", username="alice", password="chorus-demo") as chorus:
        session = chorus.create_session("Launch plan")
        chorus.post_message(session["id"], "Draft the announcement", reply=True)
        for event in chorus.follow(session["id"], last_event_id=0):
            print(event)
"""

from chorus_client._core import EventPage, MessageList
from chorus_client._follow import Backoff
from chorus_client.client import AsyncClient, Client
from chorus_client.conversation import Conversation, Message
from chorus_client.errors import (
    AccessRevoked,
    ChorusError,
    ConnectionFailed,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
)
from chorus_client.events import Connected, ControlEvent, Event, HistoryTruncated

__all__ = [
    "AccessRevoked",
    "AsyncClient",
    "Backoff",
    "ChorusError",
    "Client",
    "Connected",
    "ConnectionFailed",
    "ControlEvent",
    "Conversation",
    "Event",
    "EventPage",
    "Forbidden",
    "HistoryTruncated",
    "Message",
    "MessageList",
    "NotFound",
    "RateLimited",
    "Unauthorized",
]
