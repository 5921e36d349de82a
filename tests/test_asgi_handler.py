"""The single-hop Django ASGI handler serves sync DRF views, async views, errors and
streaming responses like Django's own handler."""

import asyncio
import json

import pytest
from channels.testing import HttpCommunicator

from config.django_handler import SingleHopASGIHandler
from tests.conftest import token_for

pytestmark = pytest.mark.django_db(transaction=True)


async def call(app, method: str, path: str, body: bytes = b"", headers: list | None = None) -> dict:
    headers = [(b"host", b"localhost"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    communicator = HttpCommunicator(app, method, path, body=body, headers=headers)
    return await communicator.get_response(timeout=10)


async def test_sync_drf_view_with_token(asgi_app, collab, bob):
    from channels.db import database_sync_to_async

    token = await database_sync_to_async(token_for)(bob)
    response = await call(
        asgi_app,
        "POST",
        f"/api/v1/sessions/{collab.pk}/messages/",
        body=json.dumps({"content": "through ASGI"}).encode(),
        headers=[(b"authorization", f"Token {token}".encode()), (b"content-type", b"application/json")],
    )
    assert response["status"] == 201, response["body"]
    assert json.loads(response["body"])["content"] == "through ASGI"


async def test_async_view_and_json_errors(asgi_app):
    assert (await call(asgi_app, "GET", "/healthz"))["status"] == 200
    missing = await call(asgi_app, "GET", "/api/v1/sessions/")
    assert missing["status"] == 401
    assert json.loads(missing["body"]) == {"detail": "Authentication credentials were not provided."}


async def test_middleware_chain_is_built_in_sync_mode():
    handler = SingleHopASGIHandler()
    assert handler._middleware_chain is not None
    # Sync mode: the outermost handler is a plain function, not a coroutine function.
    import inspect

    assert not inspect.iscoroutinefunction(handler._middleware_chain)


async def test_streaming_response_is_sent_and_closed(settings, asgi_app):
    settings.DEBUG = True  # static files are served (streamed) by Django only under DEBUG
    response = await call(asgi_app, "GET", "/static/rest_framework/css/bootstrap.min.css")
    assert response["status"] in (200, 404)


async def test_async_views_run_on_the_server_loop_and_share_its_hub(asgi_app):
    """readyz pings the process's hub: through the sync middleware chain it must still run
    on the server's event loop, or it would build a second hub on a throwaway loop."""
    import asyncio

    from realtime.hub import current_hub, get_hub

    hub = get_hub()
    assert (await call(asgi_app, "GET", "/readyz"))["status"] == 200
    assert current_hub() is hub
    assert hub.loop is asyncio.get_running_loop()


async def test_hub_first_started_by_readyz_still_serves_database_work(asgi_app, collab, alice, bob):
    """Under daphne (no lifespan) the hub may first start inside /readyz, an async view run
    through async_to_sync. Its tasks must not inherit that request's context (an executor
    that dies with it): a stream's gap fill, a database call from a hub-side task, must
    still work after the request ended."""
    from channels.db import database_sync_to_async

    from realtime.hub import current_hub
    from sessions_app import services
    from tests.support.asgi import ASGIStream
    from tests.support.layer import broadcasts_dropped

    assert current_hub() is None or current_hub().loop is not asyncio.get_running_loop()
    assert (await call(asgi_app, "GET", "/readyz"))["status"] == 200  # starts the hub
    token = await database_sync_to_async(token_for)(alice)
    async with ASGIStream(asgi_app, f"/sse/sessions/{collab.pk}/", headers={"Authorization": f"Token {token}"}) as s:
        await s.next_event()
        post = database_sync_to_async(services.message_create)
        with broadcasts_dropped(1):
            await post(session=collab, author=bob, content="lost")
            await post(session=collab, author=bob, content="reveals the gap")
        frames = await s.events_until(collab.last_event_id + 2)  # the gap fill reads the database
        assert [f.json["data"]["content"] for f in frames] == ["lost", "reveals the gap"]


async def test_in_thread_runs_off_the_loop_and_async_to_sync_comes_back_to_it():
    import threading

    from asgiref.sync import async_to_sync

    from config.django_handler import in_thread

    loop = asyncio.get_running_loop()
    seen = {}

    async def on_the_loop():
        seen["loop"] = asyncio.get_running_loop()

    def in_a_thread():
        seen["thread"] = threading.current_thread()
        async_to_sync(on_the_loop)()
        return "done"

    assert await in_thread(in_a_thread) == "done"
    assert seen["thread"] is not threading.main_thread()
    assert seen["loop"] is loop


async def test_in_thread_cancelled_lets_the_call_finish_first():
    import threading

    from config.django_handler import in_thread

    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(5)
        finished.set()

    task = asyncio.ensure_future(in_thread(slow))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    await asyncio.sleep(0)
    assert not task.done()  # still waiting for the thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert finished.is_set()
