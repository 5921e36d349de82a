"""Liveness and readiness probes, and the Prometheus endpoint.

In server processes `/healthz` and `/readyz` are answered by small ASGI apps on the event
loop (config.asgi routes them before Django): Django's sync path runs requests on a few
pooled threads, and when the database stalls every one of them can be waiting on it, so
a probe behind them would time out and get a healthy process restarted. `/healthz` touches
nothing; `/readyz` bounds each check. The Django views below serve the same answers to
the in-process test client.
"""

import asyncio
import json

from channels.db import database_sync_to_async
from django.db import connection
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from realtime.hub import get_hub

_DATABASE_CHECK_SECONDS = 3.0
_LAYER_CHECK_SECONDS = 2.0


def _database_answers() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def readiness() -> tuple[int, dict]:
    """(status, body): 503 unless the database answers and a message makes a round trip
    through the channel layer to this process's hub, each within a few seconds."""
    checks = {}
    try:
        await asyncio.wait_for(database_sync_to_async(_database_answers)(), _DATABASE_CHECK_SECONDS)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await get_hub().ping(timeout=_LAYER_CHECK_SECONDS)
        checks["channelLayer"] = "ok"
    except Exception as exc:
        checks["channelLayer"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return (200 if ready else 503), {"status": "ok" if ready else "unavailable", "checks": checks}


async def healthz(request):
    return JsonResponse({"status": "ok"})


async def readyz(request):
    status, body = await readiness()
    return JsonResponse(body, status=status)


async def metrics(request):
    """Prometheus text format for this process (scrape every process)."""
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


# --- the same probes as ASGI apps, on the event loop (config.asgi) ----------------------
async def _send_json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def healthz_app(scope, receive, send) -> None:
    """The process is up and its event loop turns: no database, no thread."""
    await _send_json(send, 200, {"status": "ok"})


async def readyz_app(scope, receive, send) -> None:
    status, body = await readiness()
    await _send_json(send, status, body)
