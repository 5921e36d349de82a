"""Prometheus counters of regenerations in this process (served by /metrics).

`chorus_regenerations_total{status}` counts the regenerations that reached each status
here: `queued` where the request was accepted, `running` where it was claimed, and
`completed` / `failed` / `cancelled` where that change was committed (a reaper in one
process may fail a run another process claimed). Every status is present at 0 from the
start (sessions_app.apps imports this module).
"""

from django.db import transaction
from prometheus_client import Counter

from realtime.metrics import preset_labels
from sessions_app.models import RegenerationStatus

REGENERATIONS = Counter("chorus_regenerations", "Regenerations that reached each status in this process", ["status"])
preset_labels(REGENERATIONS, RegenerationStatus.values)


def count_after_commit(status: str) -> None:
    """Count one regeneration reaching `status` once the current transaction commits
    (at once outside a transaction); nothing if it rolls back."""
    transaction.on_commit(REGENERATIONS.labels(status).inc)
