"""Changes to users made anywhere (the admin, a shell) that may end their open streams.

There is no service for deactivating a user, taking away staff status or changing a
password: the admin (or `manage.py changepassword`) saves the user. These receivers only
ring the doorbell (realtime.publish.streams_recheck); the check itself reads the
database, and streams are re-checked periodically anyway.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save

from realtime.publish import streams_recheck

# A password change ends the user's cookie streams of other logins (realtime.access: the
# grant's session auth hash no longer matches).
_RIGHTS = frozenset({"is_active", "is_staff", "password"})


def _user_saved(sender, instance, created: bool, update_fields=None, **kwargs) -> None:
    if created or (update_fields is not None and not _RIGHTS & set(update_fields)):
        return  # a new user has no streams; a last_login update changes no rights
    streams_recheck(user_ids=[instance.pk])


def _user_deleted(sender, instance, **kwargs) -> None:
    streams_recheck(user_ids=[instance.pk])


def connect() -> None:
    User = get_user_model()
    post_save.connect(_user_saved, sender=User, dispatch_uid="chorus.user-rights-saved")
    post_delete.connect(_user_deleted, sender=User, dispatch_uid="chorus.user-rights-deleted")
