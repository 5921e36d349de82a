"""The REST side of presence, typing and read positions (CONTRACT §3 and §7)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app import presence
from sessions_app.api import session_for
from sessions_app.serializers import PresenceOutput, ReadPositionInput, ReadPositionOutput
from sessions_app.throttles import SettingRateThrottle


class PresenceApi(APIView):
    def get_throttles(self):
        return [SettingRateThrottle("presence", "CHORUS_PRESENCE_RATE_USER")]

    @extend_schema(responses=PresenceOutput)
    def get(self, request: Request, session_id: str) -> Response:
        session, _ = session_for(request, session_id)
        online = presence.presence_for_session(session_id=session.pk)
        return Response(PresenceOutput({"online": online}).data)


class TypingApi(APIView):
    def get_throttles(self):
        return [SettingRateThrottle("typing", "CHORUS_TYPING_RATE_USER")]

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, session_id: str) -> Response:
        session, _ = session_for(request, session_id, need="write")
        presence.typing_signal(session=session, user=request.user, typing=True)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, session_id: str) -> Response:
        session, _ = session_for(request, session_id, need="write")
        presence.typing_signal(session=session, user=request.user, typing=False)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ReadPositionApi(APIView):
    def get_throttles(self):
        return [SettingRateThrottle("read_position", "CHORUS_READ_POSITION_RATE_USER")]

    @extend_schema(request=ReadPositionInput, responses=ReadPositionOutput)
    def put(self, request: Request, session_id: str) -> Response:
        session, _ = session_for(request, session_id)
        data = ReadPositionInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            position = presence.read_position_update(
                session=session, user=request.user, last_event_id=data.validated_data["lastEventId"]
            )
        except presence.NotAMember:
            raise PermissionDenied("Only the session's members have a read position.") from None
        return Response(ReadPositionOutput({"lastEventId": position}).data)
