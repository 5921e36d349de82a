from django.conf import settings
from django.db import models
from django.utils import timezone

from realtime.events import EventType


class Event(models.Model):
    """One stored event of a session's log; `seq` is its public id (gapless per session)."""

    session = models.ForeignKey(settings.CHORUS_EVENT_SOURCE_MODEL, on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    type = models.CharField(max_length=40, choices=[(t.value, t.value) for t in EventType])
    data = models.JSONField(default=dict)
    # The envelope as sent on the stream, serialized once at publish: replaying thousands
    # of events is then a read, not thousands of JSON encodings.
    envelope = models.TextField(default="", editable=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [
            # Also the replay index: (session, seq > N) ORDER BY seq walks it in order.
            models.UniqueConstraint(fields=["session", "seq"], name="event_unique_session_seq"),
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="event_seq_positive"),
            models.CheckConstraint(condition=models.Q(type__in=[t.value for t in EventType]), name="event_type_known"),
        ]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.seq} {self.type}"


class Worker(models.Model):
    """A server process of the cluster, as its last heartbeat described it (realtime.workers)."""

    id = models.CharField(max_length=200, primary_key=True)  # "host:pid:nonce"
    host = models.CharField(max_length=150)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    connections = models.PositiveIntegerField(default=0)
    rss_mb = models.FloatField(default=0)
    # {session id: {"streams": n, "users": {username: n}}}: what this process serves.
    sessions = models.JSONField(default=dict)

    class Meta:
        ordering = ["-started_at", "id"]

    def __str__(self) -> str:
        return self.id
