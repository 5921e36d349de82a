"""Django's database session store, refusing session keys that it could never have issued.

A cookie value may carry any character, NUL included (Django reads the octal escapes of
a quoted cookie value: `sessionid="\\000..."`); PostgreSQL refuses NUL in text, so looking
such a key up failed the whole request with a 500 (REST, pages and streams alike). Keys
that Django issues are 32 lowercase letters and digits; anything else is no session.
"""

from __future__ import annotations

from django.contrib.sessions.backends import db


class SessionStore(db.SessionStore):
    def _validate_session_key(self, key: str | None) -> bool:
        # The Session model's key is 40 characters at most; Django's own are 32.
        return bool(key) and 8 <= len(key) <= 40 and key.isascii() and key.isalnum()
