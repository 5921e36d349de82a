"""The ops API: /api/v1/ops/ (config.urls includes it)."""

from django.urls import path

from ops import api

urlpatterns = [
    path("stats/", api.OpsStatsApi.as_view(), name="ops-stats"),
]
