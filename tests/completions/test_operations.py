"""The generation log in /metrics, the admin and the ops selectors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from completions import selectors, services
from completions.models import GenerationLog
from tests.completions.conftest import sdk, wait_for_logs
from tests.sessions_app.regen_support import call


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


async def test_metrics_count_completions_by_status_from_zero(chorus_server, asgi_app, alice):
    before = (await call(asgi_app, "GET", "/metrics")).text
    for status in ("completed", "cancelled", "failed"):
        _metric(before, f'chorus_completions_total{{status="{status}"}}')  # present, even at 0
    client = await sdk(chorus_server, alice)
    await client.chat.completions.create(model="chorus-local", messages=[{"role": "user", "content": "hi"}])
    [log] = await wait_for_logs(1)
    after = (await call(asgi_app, "GET", "/metrics")).text
    completed = 'chorus_completions_total{status="completed"}'
    assert _metric(after, completed) == _metric(before, completed) + 1
    tokens = "chorus_completion_tokens_total"
    assert _metric(after, tokens) == _metric(before, tokens) + log.completion_tokens
    count = "chorus_completion_first_token_seconds_count"
    assert _metric(after, count) == _metric(before, count) + 1


def _row(**fields) -> GenerationLog:
    record = services.CallRecord(**{"model": "chorus-local", "status": "completed", **fields})
    return services.generation_log_write(record=record)


@pytest.mark.django_db
def test_ops_selectors_count_the_last_hour_and_list_failures(alice):
    _row(user_id=alice.pk)
    _row(user_id=alice.pk, status="failed", http_status=502, error="upstream down")
    _row(status="cancelled")
    old = _row(status="failed", error="long ago")
    GenerationLog.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))
    assert selectors.completion_counts() == {"completed": 1, "cancelled": 1, "failed": 1}
    failures = selectors.completion_failures_recent(limit=10)
    assert [(f["username"], f["httpStatus"], f["error"]) for f in failures] == [
        ("alice", 502, "upstream down"),
        (None, 200, "long ago"),
    ]


@pytest.mark.django_db
def test_admin_lists_filters_and_searches_the_log_read_only(client, alice, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    _row(user_id=alice.pk, error="")
    _row(user_id=alice.pk, status="failed", model="gpt-x", error="upstream went away")
    url = "/admin/completions/generationlog/"
    page = client.get(url)
    assert page.status_code == 200 and b"gpt-x" in page.content
    assert b"upstream went away" not in client.get(url + "?status__exact=completed").content
    assert client.get(url + "?model=gpt-x").status_code == 200
    assert client.get(url + f"?user__id__exact={alice.pk}").status_code == 200
    found = client.get(url + "?q=went+away")
    assert found.status_code == 200 and found.context["cl"].result_count == 1
    assert client.get(url + "add/").status_code == 403
    row = GenerationLog.objects.first()
    assert client.post(f"{url}{row.pk}/change/", {"model": "changed"}).status_code == 403
    assert client.get(f"{url}{row.pk}/change/").status_code == 200
    assert GenerationLog.objects.filter(model="changed").count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_log_row_is_written_even_if_the_session_was_deleted_meanwhile(alice, collab):
    from sessions_app.models import CollabSession

    session_id = collab.pk
    CollabSession.objects.filter(pk=session_id).delete()
    row = _row(user_id=alice.pk, session_id=session_id, status="cancelled")
    row.refresh_from_db()
    assert (row.status, row.session_id, row.user_id) == ("cancelled", None, alice.pk)
