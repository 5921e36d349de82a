from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Collaboration sessions"

    def ready(self) -> None:
        from sessions_app import signals

        # Registers the regeneration counters at start-up, so /metrics shows them at 0.
        from sessions_app.regenerations import metrics  # noqa: F401

        signals.connect()
