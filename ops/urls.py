"""The ops console: /ops/ (config.urls includes it)."""

from django.urls import path

from ops import views

app_name = "ops"

urlpatterns = [
    path("", views.console, name="console"),
    path("live/", views.console_live, name="live"),
    path("sessions/", views.sessions_list, name="sessions"),
    path("sessions/<uuid:session_id>/", views.session_detail, name="session"),
    path("sessions/<uuid:session_id>/prune/", views.session_prune, name="session-prune"),
    path("sessions/<uuid:session_id>/clear/", views.session_clear, name="session-clear"),
    path("sessions/<uuid:session_id>/notice/", views.session_notice, name="session-notice"),
    path("regenerations/<uuid:regeneration_id>/cancel/", views.regeneration_cancel, name="regeneration-cancel"),
    path("audit/", views.audit_list, name="audit"),
]
