"""The console's first screen as plain data: the template renders it, and the JSON
endpoint the page polls returns the same dict, so the server's first paint and the
script's updates cannot disagree about what a figure means."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ops.selectors import MinuteCount, Overview
from realtime.events import iso_timestamp
from sessions_app.models import Regeneration

# The chart's drawing box (SVG user units); static/ops/console.js uses the same numbers.
CHART_WIDTH = 600
CHART_HEIGHT = 120
CHART_TOP = 14  # room for the scale label


def duration_text(seconds: float) -> str:
    """'42s', '5m 03s', '2h 05m', '3d 4h'."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def chart_bars(series: list[MinuteCount]) -> list[dict[str, Any]]:
    peak = max((m.count for m in series), default=0)
    slot = CHART_WIDTH / max(1, len(series))
    usable = CHART_HEIGHT - CHART_TOP
    bars = []
    for index, minute in enumerate(series):
        height = 0.0 if peak == 0 else max(1.0 if minute.count else 0.0, usable * minute.count / peak)
        bars.append(
            {
                "minute": iso_timestamp(minute.minute),
                "label": minute.minute.strftime("%H:%M"),
                "count": minute.count,
                "x": round(index * slot + 1, 2),
                "y": round(CHART_HEIGHT - height, 2),
                "width": round(max(1.0, slot - 2), 2),
                "height": round(height, 2),
            }
        )
    return bars


def regeneration_row(regeneration: Regeneration, now: dt.datetime) -> dict[str, Any]:
    started = regeneration.started_at or regeneration.created_at
    return {
        "id": str(regeneration.pk),
        "sessionId": str(regeneration.session_id),
        "sessionTitle": regeneration.session.title,
        "status": regeneration.status,
        "progress": regeneration.progress,
        "requestedBy": regeneration.requested_by.get_username() if regeneration.requested_by else "",
        "worker": regeneration.worker,
        "age": duration_text((now - started).total_seconds()),
    }


def overview_payload(overview: Overview) -> dict[str, Any]:
    now = overview.now
    return {
        "generatedAt": iso_timestamp(now),
        "summary": {
            "sessions": len(overview.sessions),
            "subscribers": overview.subscribers,
            "eventsPerMinute": overview.events_per_minute,
            "running": overview.regenerations["running"],
            "queued": overview.regenerations["queued"],
            "errorsLastHour": overview.errors_last_hour,
            "workers": len(overview.alive_workers),
        },
        "workers": [
            {
                "id": w.id,
                "pid": w.pid,
                "host": w.host,
                "connections": w.connections,
                "rssMb": w.rss_mb,
                "memory": f"{w.rss_mb:.1f} MB",
                "uptime": duration_text(((now if w.alive else w.last_seen) - w.started_at).total_seconds()),
                "lastSeen": iso_timestamp(w.last_seen),
                "lastSeenAgo": duration_text((now - w.last_seen).total_seconds()) + " ago",
                "alive": w.alive,
                "state": "alive" if w.alive else "gone",
            }
            for w in overview.workers
        ],
        "chart": {"peak": overview.chart_max, "bars": chart_bars(overview.series)},
        "sessions": [
            {
                "id": s.id,
                "title": s.title,
                "subscribers": s.subscribers,
                "historySize": s.history_size,
                "lastEventId": s.last_event_id,
                "users": ", ".join(f"{name} ({count})" if count > 1 else name for name, count in s.users.items()),
            }
            for s in overview.sessions
        ],
        "regenerations": [regeneration_row(r, now) for r in overview.active],
        "errors": [{**item.as_json(), "when": item.at.strftime("%H:%M:%S")} for item in overview.errors],
    }
