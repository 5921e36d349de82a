"""Liveness and readiness probes, and the Prometheus endpoint."""

import asyncio

from channels.db import database_sync_to_async
from django.db import connection
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from realtime.hub import get_hub


async def healthz(request):
    return JsonResponse({"status": "ok"})


def _database_answers() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def readyz(request):
    """503 unless the database answers and a message makes a round trip through the
    channel layer to this process's hub."""
    checks = {}
    try:
        await asyncio.wait_for(database_sync_to_async(_database_answers)(), 3)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await get_hub().ping(timeout=2)
        checks["channelLayer"] = "ok"
    except Exception as exc:
        checks["channelLayer"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


async def metrics(request):
    """Prometheus text format for this process (scrape every process)."""
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
