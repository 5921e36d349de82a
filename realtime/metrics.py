"""Prometheus metrics of this process (each server process serves its own /metrics).

Every family is present from the start: labelled counters are created with each known
label value at 0, so a dashboard's rate() and absent() work before the first event of a
kind (a series that appears only when it first moves loses its first increment to rate()).
"""

import time

from prometheus_client import Counter, Gauge, Histogram

from realtime.events import EventType

OPEN_STREAMS = Gauge("chorus_open_streams", "SSE streams open in this process")
EVENTS_PUBLISHED = Counter("chorus_events_published_total", "Events stored and broadcast", ["type"])
EVENTS_DELIVERED = Counter("chorus_events_delivered_total", "Event frames handed to streams")
BROADCAST_FAILURES = Counter(
    "chorus_broadcast_failures_total",
    "Channel-layer sends that failed, timed out or were shed (the event is stored; streams read it from the database)",
)
CACHE_FAILURES = Counter("chorus_cache_failures_total", "Cache calls that failed (Redis away); treated as misses")
EVENTS_PRUNED = Counter("chorus_events_pruned_total", "Events deleted by scheduled pruning", ["reason"])
STREAMS_ENDED = Counter("chorus_streams_ended_total", "Streams ended by the server", ["reason"])
# Why the server ends streams (realtime.stream); other values may appear, these are known.
STREAM_END_REASONS = (
    "queue_full",
    "max_lifetime",
    "access_revoked",
    "shutdown",
    "error",
    "send_failed",
    "close_timeout",
)
DELIVERY_LATENCY = Histogram(
    "chorus_publish_to_deliver_seconds",
    "From the publishing transaction's commit to the hub handing the frame to its streams",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def observe_delivery(stream_count: int, published_at: float | None) -> None:
    EVENTS_DELIVERED.inc(stream_count)
    if published_at:
        DELIVERY_LATENCY.observe(max(0.0, time.time() - published_at))


def preset_labels(counter: Counter, values) -> None:
    """Create `counter`'s series for each label value, at 0."""
    for value in values:
        counter.labels(value)


preset_labels(EVENTS_PUBLISHED, [t.value for t in EventType])
preset_labels(STREAMS_ENDED, STREAM_END_REASONS)
