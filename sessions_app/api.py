"""The REST API (CONTRACT §3): thin views that validate, call one service, render."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.replay import event_envelope, events_after, log_position
from realtime.tickets import ticket_issue
from sessions_app import schema, selectors, services
from sessions_app.models import ACTIVE_REGENERATION_STATUSES, CollabSession, Role
from sessions_app.pagination import StrictPageNumberPagination
from sessions_app.regenerations import selectors as regeneration_selectors
from sessions_app.regenerations import services as regeneration_services
from sessions_app.serializers import (
    EventsQuery,
    MemberInput,
    MessageCreatedOutput,
    MessageEditInput,
    MessageInput,
    MessageOutput,
    PageQuery,
    RegenerateInput,
    RegenerationOutput,
    RegenerationStartedOutput,
    SessionInput,
    SessionOutput,
    TicketOutput,
)
from sessions_app.throttles import message_throttle_check, regeneration_throttle_check


def session_for(request: Request, session_id: str, *, need: str = "read") -> tuple[CollabSession, str | None]:
    """The session if the caller may do `need` ('read', 'write' or 'own') with it.
    Non-members get 404 (SessionNotFound), members without the role 403."""
    session, role = selectors.session_get_for_user(session_id=session_id, user=request.user)
    if need == "write" and not selectors.is_writer(role):
        raise PermissionDenied("Only the owner and editors may do this.")
    if need == "own" and role != Role.OWNER:
        raise PermissionDenied("Only the session's owner may do this.")
    return session, role


def _session_detail(request: Request, session_id) -> dict:
    session = CollabSession.objects.select_related("owner").prefetch_related("memberships__user").get(pk=session_id)
    return SessionOutput(session, context={"request": request}).data


class SessionListApi(APIView):
    @extend_schema(
        operation_id="v1_sessions_list",
        parameters=[PageQuery],
        responses=schema.paginated("SessionPage", SessionOutput),
    )
    def get(self, request: Request) -> Response:
        paginator = StrictPageNumberPagination()
        page = paginator.paginate_queryset(selectors.sessions_for_user(user=request.user), request, view=self)
        return paginator.get_paginated_response(SessionOutput(page, many=True, context={"request": request}).data)

    @extend_schema(request=SessionInput, responses={201: SessionOutput})
    def post(self, request: Request) -> Response:
        data = SessionInput(data=request.data)
        data.is_valid(raise_exception=True)
        session = services.session_create(owner=request.user, title=data.validated_data["title"])
        return Response(_session_detail(request, session.pk), status=status.HTTP_201_CREATED)


class SessionDetailApi(APIView):
    @extend_schema(responses=SessionOutput)
    def get(self, request: Request, session_id: str) -> Response:
        session, _ = session_for(request, session_id)
        return Response(_session_detail(request, session.pk))

    @extend_schema(request=SessionInput, responses=SessionOutput)
    def patch(self, request: Request, session_id: str) -> Response:
        session, _ = session_for(request, session_id, need="own")
        data = SessionInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.session_update(session=session, title=data.validated_data["title"])
        return Response(_session_detail(request, session.pk))

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, session_id: str) -> Response:
        session, _ = session_for(request, session_id, need="own")
        services.session_delete(session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberListApi(APIView):
    @extend_schema(request=MemberInput, responses={201: MemberInput})
    def post(self, request: Request, session_id: str) -> Response:
        session, _ = session_for(request, session_id, need="own")
        data = MemberInput(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.member_add(session=session, **data.validated_data)
        return Response({"username": membership.user.username, "role": membership.role}, status=status.HTTP_201_CREATED)


class MemberDetailApi(APIView):
    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, session_id: str, username: str) -> Response:
        session, _ = session_for(request, session_id, need="own")
        services.member_remove(session=session, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MessageListApi(APIView):
    @extend_schema(
        operation_id="v1_sessions_messages_list",
        parameters=[PageQuery],
        responses=schema.paginated("MessagePage", MessageOutput, last_event_id=True),
    )
    def get(self, request: Request, session_id: str) -> Response:
        session, _ = session_for(request, session_id)
        paginator = StrictPageNumberPagination()
        # The id first: the messages read after it are at least that new, so a client that
        # resumes the stream from it misses nothing (CONTRACT §3). The order is what makes
        # this hold; a transaction would only make SQLite readers queue behind writers.
        last_event_id = selectors.session_last_event_id(session_id=session.pk)
        page = paginator.paginate_queryset(selectors.messages_for_session(session=session), request, view=self)
        regeneration_selectors.contents_so_far(page)  # answers still being written
        response = paginator.get_paginated_response(MessageOutput(page, many=True).data)
        response.data["lastEventId"] = last_event_id
        return response

    @extend_schema(request=MessageInput, responses={201: MessageCreatedOutput})
    def post(self, request: Request, session_id: str) -> Response:
        data = MessageInput(data=request.data)
        counted = False
        if data.is_valid() and not data.validated_data["reply"]:
            # The common post: one statement checks the session and the author's role and
            # writes (services.message_post_one_statement); reading the session first
            # cost a query (about 0.2 ms of CPU). When it cannot decide, the general path
            # below reads, answers 404/403 as before, or posts.
            message_throttle_check(request=request, view=self)
            counted = True
            message = services.message_post_one_statement(
                session_id=selectors.parse_session_id(session_id),
                author=request.user,
                content=data.validated_data["content"],
            )
            if message is not None:
                return Response(MessageOutput(message).data, status=status.HTTP_201_CREATED)
        session, _ = session_for(request, session_id, need="write")  # 404 and 403 before 400
        data.is_valid(raise_exception=True)
        reply = data.validated_data["reply"]
        if not counted:
            message_throttle_check(request=request, view=self)
        if reply:
            regeneration_throttle_check(request=request, view=self, session_id=session.pk)
        message, regeneration = services.message_post(
            session=session, author=request.user, content=data.validated_data["content"], reply=reply
        )
        body = MessageOutput(message).data
        if regeneration is not None:
            body["regenerationId"] = str(regeneration.pk)
        return Response(body, status=status.HTTP_201_CREATED)


class EventListApi(APIView):
    """The polling fallback: stored events after `after`, with the same envelopes as the stream."""

    @extend_schema(parameters=[EventsQuery], responses={200: schema.EVENT_PAGE})
    def get(self, request: Request, session_id: str) -> Response:
        session, _ = session_for(request, session_id)
        query = EventsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        after, limit = query.validated_data["after"], query.validated_data["limit"]
        position = log_position(session_id=session.pk)
        after = min(after, position.newest)
        # Bounded by the newest id read above, so no event in the page is past `lastId`
        # (a client resuming from `lastId` would otherwise receive it twice).
        found = events_after(session_id=session.pk, after=after, limit=limit, up_to=position.newest)
        first = found[0].seq if found else position.newest + 1
        return Response(
            {
                "events": [event_envelope(event) for event in found],
                "lastId": position.newest,
                "truncated": after < position.newest and first > after + 1,
            }
        )


class StreamTicketApi(APIView):
    @extend_schema(request=None, responses={201: TicketOutput})
    def post(self, request: Request, session_id: str) -> Response:
        session, _ = session_for(request, session_id)
        # Bound to the token used, if any: revoking it also ends the stream (CONTRACT §2);
        # asked for with the cookie, to the password: changing it also ends the stream.
        digest = getattr(request.auth, "digest", None)
        auth_hash = request.user.get_session_auth_hash() if digest is None else None
        ticket = ticket_issue(user_id=request.user.pk, session_id=session.pk, token_digest=digest, auth_hash=auth_hash)
        body = TicketOutput({"ticket": ticket, "expiresIn": settings.CHORUS_STREAM_TICKET_SECONDS}).data
        return Response(body, status=status.HTTP_201_CREATED)


# --- messages: edit and delete; regenerations (issue 3) ------------------------------------
class MessageDetailApi(APIView):
    """Any member may read a message; its author or the session's owner may edit or delete
    it (viewers never). Another session's message id is 404, like an unknown one."""

    @extend_schema(responses=MessageOutput)
    def get(self, request: Request, session_id: str, message_id: str) -> Response:
        session, _ = session_for(request, session_id)
        message = selectors.message_get(session=session, message_id=message_id)
        regeneration_selectors.contents_so_far([message])  # an answer still being written
        return Response(MessageOutput(message).data)

    def _message(self, request: Request, session_id: str, message_id: str):
        session, role = session_for(request, session_id, need="write")
        message = selectors.message_get(session=session, message_id=message_id)
        if not services.message_may_change(message=message, user=request.user, role=role):
            raise PermissionDenied("Only the message's author or the session's owner may change it.")
        return message

    @extend_schema(request=MessageEditInput, responses=MessageOutput)
    def patch(self, request: Request, session_id: str, message_id: str) -> Response:
        message = self._message(request, session_id, message_id)
        data = MessageEditInput(data=request.data)
        data.is_valid(raise_exception=True)
        message = services.message_edit(message=message, content=data.validated_data["content"], by=request.user)
        return Response(MessageOutput(message).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, session_id: str, message_id: str) -> Response:
        message = self._message(request, session_id, message_id)
        services.message_delete(message=message, by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RegenerateApi(APIView):
    """Start a regeneration of a message; answers at once, the answer streams as events."""

    @extend_schema(request=RegenerateInput, responses={202: RegenerationStartedOutput})
    def post(self, request: Request) -> Response:
        data = RegenerateInput(data=request.data)
        data.is_valid(raise_exception=True)
        session, _ = session_for(request, data.validated_data["sessionId"], need="write")
        message = selectors.message_get(session=session, message_id=data.validated_data["messageId"])
        regeneration_throttle_check(request=request, view=self, session_id=session.pk)
        regeneration = regeneration_services.regeneration_start(
            session=session,
            source_message=message,
            requested_by=request.user,
            user_query=data.validated_data.get("query"),
        )
        body = {
            "success": True,
            "regenerationId": str(regeneration.pk),
            "messageId": str(regeneration.message_id),
            "originalMessageId": str(message.pk),
            "taskId": regeneration.task_id,
        }
        return Response(RegenerationStartedOutput(body).data, status=status.HTTP_202_ACCEPTED)


class RegenerationDetailApi(APIView):
    @extend_schema(responses=RegenerationOutput)
    def get(self, request: Request, regeneration_id: str) -> Response:
        regeneration, _ = regeneration_selectors.regeneration_get_for_user(
            regeneration_id=regeneration_id, user=request.user
        )
        if regeneration.status in ACTIVE_REGENERATION_STATUSES:  # its rows get the content when it ends
            regeneration.content = regeneration_selectors.regeneration_content_so_far(
                regeneration_id=regeneration.pk, session_id=regeneration.session_id
            )
        return Response(RegenerationOutput(regeneration).data)


class RegenerationCancelApi(APIView):
    @extend_schema(request=None, responses={202: RegenerationOutput})
    def post(self, request: Request, regeneration_id: str) -> Response:
        regeneration, role = regeneration_selectors.regeneration_get_for_user(
            regeneration_id=regeneration_id, user=request.user
        )
        if not selectors.is_writer(role):
            raise PermissionDenied("Only the owner and editors may do this.")
        regeneration = regeneration_services.regeneration_cancel(regeneration=regeneration, by=request.user)
        return Response(RegenerationOutput(regeneration).data, status=status.HTTP_202_ACCEPTED)
