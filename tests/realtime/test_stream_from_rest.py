"""The client's recipe of CONTRACT §3: load the state over REST, open the stream with the
`lastEventId` it carried, and miss nothing that happened in between."""

import pytest
from channels.db import database_sync_to_async

from tests.conftest import token_for
from tests.support.asgi import ASGIStream

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("loaded_from", ["messages/", ""])
async def test_resuming_from_the_rest_last_event_id_misses_nothing(asgi_app, api, collab, alice, bob, loaded_from):
    @database_sync_to_async
    def load_state() -> int:
        body = api(alice).get(f"/api/v1/sessions/{collab.pk}/{loaded_from}").json()
        return body["lastEventId"]

    @database_sync_to_async
    def meanwhile() -> list[str]:
        client = api(bob)
        posted = [
            client.post(f"/api/v1/sessions/{collab.pk}/messages/", {"content": f"m{i}"}, format="json")
            for i in range(3)
        ]
        return [response.json()["id"] for response in posted]

    last_event_id = await load_state()
    missed = await meanwhile()  # before the stream is open
    headers = {"Authorization": f"Token {await database_sync_to_async(token_for)(alice)}"}
    async with ASGIStream(
        asgi_app, f"/sse/sessions/{collab.pk}/", headers=headers, query={"lastEventId": last_event_id}
    ) as s:
        connected = await s.next_event()
        assert connected.json["lastEventId"] == last_event_id + 3
        frames = await s.events_until(last_event_id + 3)
    assert [f.id for f in frames] == [last_event_id + 1, last_event_id + 2, last_event_id + 3]
    assert [f.json["data"]["messageId"] for f in frames] == missed


async def test_polling_and_streaming_agree(asgi_app, api, collab, alice, bob):
    @database_sync_to_async
    def post_and_poll() -> dict:
        for i in range(3):
            api(bob).post(f"/api/v1/sessions/{collab.pk}/messages/", {"content": f"m{i}"}, format="json")
        return api(alice).get(f"/api/v1/sessions/{collab.pk}/events/", {"after": 0}).json()

    polled = await post_and_poll()
    headers = {"Authorization": f"Token {await database_sync_to_async(token_for)(alice)}", "Last-Event-ID": "0"}
    async with ASGIStream(asgi_app, f"/sse/sessions/{collab.pk}/", headers=headers) as s:
        await s.next_event()
        frames = await s.events_until(polled["lastId"])
    assert [f.json for f in frames] == polled["events"]
    assert [f.event for f in frames] == [e["type"] for e in polled["events"]]
