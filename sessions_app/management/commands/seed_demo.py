"""Create the demo users and session that `make run` uses, and print how to sign in."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from sessions_app import services, tokens
from sessions_app.models import CollabSession, Membership, Role

DEMO_TITLE = "Demo session"


class Command(BaseCommand):
    help = "Create demo users alice and bob, a staff user and a demo session (idempotent)."

    def handle(self, *args, **options) -> None:
        password = os.environ.get("CHORUS_DEMO_PASSWORD", "chorus-demo")
        User = get_user_model()
        with transaction.atomic():
            users = {}
            for name, staff in (("alice", False), ("bob", False), ("staff", True)):
                user, created = User.objects.get_or_create(
                    username=name, defaults={"is_staff": staff, "is_superuser": staff}
                )
                if created:
                    user.set_password(password)
                    user.save()
                users[name] = user
            session = CollabSession.objects.filter(title=DEMO_TITLE, owner=users["alice"]).first()
            if session is None:
                session = services.session_create(owner=users["alice"], title=DEMO_TITLE)
                services.member_add(session=session, username="bob", role=Role.EDITOR)
                services.message_create(session=session, author=users["alice"], content="Welcome to Chorus!")
            elif not Membership.objects.filter(session=session, user=users["bob"]).exists():
                services.member_add(session=session, username="bob", role=Role.EDITOR)
        self.stdout.write(f"Demo users (password {password!r}): alice (owner), bob (editor), staff (staff: /admin/)")
        # A fresh token per run: only digests are stored, so an earlier one cannot be shown.
        for name in ("alice", "bob"):
            instance, token = tokens.token_issue(user=users[name])
            self.stdout.write(f"  {name}: Authorization: Token {token}  (expires {instance.expiry:%Y-%m-%d %H:%M} UTC)")
        self.stdout.write(f"Demo session: {session.pk}")
        self.stdout.write("")
        self.stdout.write(f"Open http://127.0.0.1:8000/ and sign in as alice, bob or staff with password {password!r}")
        self.stdout.write(f"  (the demo session: http://127.0.0.1:8000/sessions/{session.pk}/)")
