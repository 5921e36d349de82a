"""Session-cookie authentication for streams, only where a session cookie is sent."""

from channels.auth import AuthMiddlewareStack
from django.conf import settings
from django.contrib.auth.models import AnonymousUser


class SessionCookieAuth:
    """Channels' auth middleware stack, applied only to requests that carry Django's
    session cookie. Its user lookup is a database round trip (a thread hop) on every
    connection; streams authenticated by token or ticket skip it, which matters when
    thousands of clients reconnect at once."""

    def __init__(self, app) -> None:
        self.app = app
        self.with_cookie = AuthMiddlewareStack(app)
        self.marker = settings.SESSION_COOKIE_NAME.encode() + b"="

    async def __call__(self, scope, receive, send):
        for name, value in scope.get("headers", ()):
            if name == b"cookie" and self.marker in value:
                return await self.with_cookie(scope, receive, send)
        return await self.app(dict(scope, user=AnonymousUser()), receive, send)
