from django.urls import path, re_path

from sessions_app import api, auth_api, presence_api

# The busiest routes first (config/urls.py says why).
urlpatterns = [
    path("sessions/<str:session_id>/messages/", api.MessageListApi.as_view(), name="message-list"),
    path("auth/token/", auth_api.TokenObtainApi.as_view(), name="api-token"),
    path("auth/logout/", auth_api.LogoutApi.as_view(), name="api-logout"),
    path("auth/logout-all/", auth_api.LogoutAllApi.as_view(), name="api-logout-all"),
    path("sessions/", api.SessionListApi.as_view(), name="session-list"),
    path("sessions/<str:session_id>/", api.SessionDetailApi.as_view(), name="session-detail"),
    path("sessions/<str:session_id>/members/", api.MemberListApi.as_view(), name="member-list"),
    path("sessions/<str:session_id>/members/<str:username>/", api.MemberDetailApi.as_view(), name="member-detail"),
    path("sessions/<str:session_id>/events/", api.EventListApi.as_view(), name="event-list"),
    path("sessions/<str:session_id>/messages/<str:message_id>/", api.MessageDetailApi.as_view(), name="message-detail"),
    # The contract names it without a trailing slash; both spellings are served as is.
    re_path(r"^chat_actions/regenerate/?$", api.RegenerateApi.as_view(), name="chat-regenerate"),
    path("regenerations/<str:regeneration_id>/", api.RegenerationDetailApi.as_view(), name="regeneration-detail"),
    path(
        "regenerations/<str:regeneration_id>/cancel/",
        api.RegenerationCancelApi.as_view(),
        name="regeneration-cancel",
    ),
    path("sessions/<str:session_id>/stream-ticket/", api.StreamTicketApi.as_view(), name="stream-ticket"),
    path("sessions/<str:session_id>/presence/", presence_api.PresenceApi.as_view(), name="session-presence"),
    path("sessions/<str:session_id>/typing/", presence_api.TypingApi.as_view(), name="session-typing"),
    path(
        "sessions/<str:session_id>/read-position/", presence_api.ReadPositionApi.as_view(), name="session-read-position"
    ),
]
