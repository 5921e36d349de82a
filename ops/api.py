"""`GET /api/v1/ops/stats/` (CONTRACT §6): cluster-wide figures for staff."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ops.selectors import ops_stats


class OpsWorkerOutput(serializers.Serializer):
    id = serializers.CharField(help_text="host:pid:nonce of the server process")
    pid = serializers.IntegerField()
    host = serializers.CharField()
    connections = serializers.IntegerField(help_text="streams open in this process")
    rssMb = serializers.FloatField(help_text="resident memory in MiB")
    lastSeen = serializers.DateTimeField(help_text="its last heartbeat")


class OpsSessionStatOutput(serializers.Serializer):
    subscribers = serializers.IntegerField(help_text="streams open on every live process")
    historySize = serializers.IntegerField(help_text="events stored")
    lastEventId = serializers.IntegerField()


class OpsRegenerationCountsOutput(serializers.Serializer):
    running = serializers.IntegerField()
    queued = serializers.IntegerField()


class OpsStatsOutput(serializers.Serializer):
    sessions = serializers.IntegerField(help_text="sessions with at least one open stream")
    subscribers = serializers.IntegerField(help_text="open streams, cluster-wide")
    workers = OpsWorkerOutput(many=True, help_text="live server processes (a heartbeat within the stale time)")
    sessionStats = serializers.DictField(child=OpsSessionStatOutput(), help_text="per session id with open streams")
    eventsPerMinute = serializers.IntegerField(help_text="events published in the last 60 seconds")
    regenerations = OpsRegenerationCountsOutput()


# Named `Error`: the one error schema every operation of the API refers to.
@extend_schema_serializer(component_name="Error")
class OpsErrorOutput(serializers.Serializer):
    detail = serializers.CharField()


class OpsStatsApi(APIView):
    """Cluster-wide figures from the worker registry and the database, whichever process answers."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="v1_ops_stats",
        responses={
            200: OpsStatsOutput,
            401: OpenApiResponse(OpsErrorOutput, description="No or invalid credentials."),
            403: OpenApiResponse(OpsErrorOutput, description="The caller is not staff."),
        },
        description="Staff only (403 for other users, 401 without credentials). Figures come from the "
        "heartbeats of every live server process and from the database, never from the answering process alone.",
    )
    def get(self, request: Request) -> Response:
        return Response(ops_stats())
