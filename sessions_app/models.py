import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Role(models.TextChoices):
    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"


WRITER_ROLES = (Role.OWNER, Role.EDITOR)


class CollabSession(models.Model):
    """A collaboration session; `last_event_id` is the newest id of its event log,
    advanced only by realtime.publish.event_publish."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_sessions")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    last_event_id = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "collaboration session"
        constraints = [
            models.CheckConstraint(condition=models.Q(last_event_id__gte=0), name="session_last_event_id_non_negative")
        ]

    def __str__(self) -> str:
        return self.title

    def save(self, *args, **kwargs) -> None:
        """Never write `last_event_id` when updating a row: only event_publish advances it,
        in SQL, under the row's lock. A save of an instance read earlier (the admin's form,
        any code holding a stale copy) would otherwise roll the counter back, and every
        later publish would collide with a stored id (IntegrityError)."""
        if not self._state.adding and not kwargs.get("force_insert"):
            fields = kwargs.get("update_fields")
            if fields is None:
                fields = [f.name for f in self._meta.concrete_fields if not f.primary_key]
            kwargs["update_fields"] = [name for name in fields if name != "last_event_id"]
        super().save(*args, **kwargs)


class Membership(models.Model):
    session = models.ForeignKey(CollabSession, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices)
    created_at = models.DateTimeField(default=timezone.now)
    # "Seen up to": the newest event id this member has read (CONTRACT §7); only grows.
    last_read_event_id = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["session", "user"], name="membership_unique_user"),
            models.CheckConstraint(condition=models.Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.session} ({self.role})"


class MessageRole(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"


class Message(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(CollabSession, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=MessageRole.choices, default=MessageRole.USER)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    content = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    edited_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # A regenerated assistant message points at the message it is a new version of.
    original_message = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="versions"
    )

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["session", "created_at"], name="message_session_created")]
        constraints = [
            models.CheckConstraint(condition=models.Q(role__in=MessageRole.values), name="message_role_valid")
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"


class RegenerationStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_REGENERATION_STATUSES = (RegenerationStatus.QUEUED, RegenerationStatus.RUNNING)


class Regeneration(models.Model):
    """One run of a model provider that writes an assistant message.

    `message` is the assistant message being written; `source_message` the message the
    request named (the one regenerated, or the user's message a reply answers). At most
    one queued or running regeneration per source message (a partial unique constraint).
    `heartbeat_at` is the lease: the process running it renews it, and any process may
    mark it failed once it is older than CHORUS_REGENERATION_LEASE_SECONDS
    (sessions_app.regenerations.runner). Every state change after `queued` is a
    conditional UPDATE on the status, so a cancelled or reaped run can never write again.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(CollabSession, on_delete=models.CASCADE, related_name="regenerations")
    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="regeneration")
    source_message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="regenerations_requested")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="regenerations"
    )
    user_query = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=RegenerationStatus.choices, default=RegenerationStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    content = models.TextField(blank=True)
    error = models.TextField(blank=True)
    provider = models.CharField(max_length=40, blank=True)
    model = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    # "host:pid:nonce" of the process whose event loop runs it (empty while queued).
    worker = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="regeneration_status_lease")]
        constraints = [
            models.UniqueConstraint(
                fields=["source_message"],
                condition=models.Q(status__in=["queued", "running"]),
                name="regeneration_one_active_per_message",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=RegenerationStatus.values), name="regeneration_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(progress__gte=0, progress__lte=100), name="regeneration_progress_percent"
            ),
        ]

    def __str__(self) -> str:
        return f"regeneration {self.pk} ({self.status})"

    @property
    def task_id(self) -> str:
        """The runner's task id that events carry: the regeneration's own id."""
        return str(self.pk)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_REGENERATION_STATUSES
