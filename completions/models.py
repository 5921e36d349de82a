from django.conf import settings
from django.db import models
from django.utils import timezone


class GenerationStatus(models.TextChoices):
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class GenerationLog(models.Model):
    """One call of `POST /v1/chat/completions`, whatever its outcome (written when it
    ends). Sizes count Unicode code points (`*_chars`) and tokens as the provider counts
    them, or Chorus's approximation (docs/openai.md). `first_token_seconds` is null when
    no token came; `http_status` is the status the caller got (200 for streams, even if
    an error came in-band after the headers)."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="generation_logs"
    )
    model = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=40, blank=True)
    stream = models.BooleanField(default=False)
    message_count = models.PositiveIntegerField(default=0)
    prompt_chars = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_chars = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    first_token_seconds = models.FloatField(null=True, blank=True)
    duration_seconds = models.FloatField(default=0)
    status = models.CharField(max_length=10, choices=GenerationStatus.choices)
    finish_reason = models.CharField(max_length=20, blank=True)
    http_status = models.PositiveSmallIntegerField(default=200)
    error = models.TextField(blank=True)
    session = models.ForeignKey(
        "sessions_app.CollabSession",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="generation_logs",
    )
    message = models.ForeignKey(
        "sessions_app.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="generation_logs"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"], name="generation_log_status_created")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=GenerationStatus.values), name="generation_log_status_valid"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.status} at {self.created_at:%Y-%m-%d %H:%M:%S}"
