"""ASGI entry point: `/sse/...` goes to the stream consumer behind Channels' auth
middleware (session cookie); `/v1/...` to the OpenAI-compatible endpoint (an ASGI app of
its own: completions.asgi says why); everything else to Django, which does its own auth."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup(set_prefix=False)

from config.django_handler import SingleHopASGIHandler  # noqa: E402
from config.runtime import bound_database_waits, tune_garbage_collector  # noqa: E402

bound_database_waits()

django_asgi_app = SingleHopASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from completions.asgi import application as completions_app  # noqa: E402
from completions.asgi import with_completions_drain  # noqa: E402
from realtime.health import healthz_app, readyz_app  # noqa: E402
from realtime.lifespan import lifespan_app, start_on_first_request  # noqa: E402
from realtime.middleware import SessionCookieAuth  # noqa: E402
from realtime.stream import SessionStream  # noqa: E402

application = ProtocolTypeRouter(
    {
        # daphne speaks no lifespan: the hub starts with the first request instead.
        "http": start_on_first_request(
            URLRouter(
                [
                    path("sse/sessions/<uuid:session_id>/", SessionCookieAuth(SessionStream.as_asgi())),
                    re_path(r"^v1/", completions_app),
                    # Probes on the event loop, never queued behind Django's threads (faults).
                    path("healthz", healthz_app),
                    path("readyz", readyz_app),
                    re_path(r"", django_asgi_app),
                ]
            )
        ),
        "lifespan": with_completions_drain(lifespan_app),
    }
)

# Last, so that everything imported above is frozen.
tune_garbage_collector()
