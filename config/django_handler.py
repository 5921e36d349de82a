"""Django's ASGI handler, serving each request in one thread hop.

Django's own ASGI handler costs several thread hops per request even for a trivial view:
a new thread per request (ThreadSensitiveContext), one `sync_to_async` call per
sync-capable middleware method (about a dozen with the default middleware), one per
`request_started` and `request_finished` receiver, plus a task watching for disconnects.
Measured here: 4 ms of CPU for a trivial view, and every published event pays it (every
millisecond on the publishing path costs a millisecond per 1,000 deliveries).

Our views are sync (DRF), so this handler builds the middleware chain in sync mode, as
under WSGI, and runs request_started, the chain, the view and request_finished in a single
call on a pooled thread. Database connections stay correct because everything that opens
and returns them for a request runs in that one thread. Async views still work: Django
calls them through `async_to_sync`, back on the server's event loop.

The hop itself is a submit to a thread pool the size of the loop's default executor (which
asgiref's `sync_to_async(thread_sensitive=False)` used), without asgiref's wrapper: that
wrapper (a SyncToAsync object per call, signature inspection, context copied in and back,
Local storage re-homed) was 7% of the server's GIL time in a message post (py-spy), for
nothing a request needs. What `async_to_sync` needs in the thread (which loop is the
server's) is still set.
"""

import asyncio
import contextvars
import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import SyncToAsync
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.urls import set_script_prefix


class SingleHopASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        response = await in_thread(self._respond, scope, body_file)
        try:
            await self.send_response(response, send)
        finally:
            if response.streaming:  # only now are its resources done with
                await in_thread(self._close, response, body_file)

    def _respond(self, scope, body_file):
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        response = error_response if request is None else self.get_response(request)
        response._handler_class = self.__class__
        if not response.streaming:
            # The content is rendered already; closing here sends request_finished from
            # the thread that used the database connection, which returns it.
            self._close(response, body_file)
        return response

    @staticmethod
    def _close(response, body_file) -> None:
        try:
            response.close()
        finally:
            body_file.close()


# As many threads as asyncio's default executor (and asgiref's thread_sensitive=False) has.
_request_threads = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="request")


async def in_thread(function, *args):
    """`function(*args)` on a request thread, in a copy of the current context. If the
    caller is cancelled meanwhile, the call still runs to its end (it holds a database
    connection until then) before the cancellation goes on."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    future = asyncio.wrap_future(_request_threads.submit(context.run, _call_from_loop, loop, function, args), loop=loop)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


def _call_from_loop(loop: asyncio.AbstractEventLoop, function, args: tuple):
    # What asgiref's AsyncToSync reads to run coroutines back on the server's loop.
    SyncToAsync.threadlocal.main_event_loop = loop
    SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()
    return function(*args)
