from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditAction(models.TextChoices):
    REGENERATION_CANCEL = "regeneration_cancel", "cancelled a regeneration"
    HISTORY_PRUNE = "history_prune", "pruned history"
    HISTORY_CLEAR = "history_clear", "cleared history"
    SYSTEM_NOTICE = "system_notice", "sent a system notice"


class AuditEntry(models.Model):
    """One action an operator took from the ops console: who, what, when, on what, and
    the details (counts, the notice's text). Written in the action's own transaction, so
    an entry exists exactly when the action happened. `actor_username` keeps the name
    after the user is deleted; `target_id` is a string because targets are of several
    kinds (a session, a regeneration) and may be deleted later."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="ops_audit_entries"
    )
    actor_username = models.CharField(max_length=150)
    action = models.CharField(max_length=40, choices=AuditAction.choices)
    target_type = models.CharField(max_length=40)
    target_id = models.CharField(max_length=64)
    # The session the action concerned (also for a regeneration), to list a session's entries.
    session_id = models.UUIDField(null=True, blank=True, db_index=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"
        constraints = [
            models.CheckConstraint(condition=models.Q(action__in=AuditAction.values), name="audit_action_known")
        ]

    def __str__(self) -> str:
        return f"{self.actor_username} {self.get_action_display()} {self.target_type} {self.target_id}"
