"""The hand-written SQL of the hot paths (realtime.sql) must give what the ORM gives:
the same instances when reading, the same rows when writing, on SQLite and PostgreSQL."""

from __future__ import annotations

from uuid import UUID

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Model
from knox.models import AuthToken

from realtime.models import Event
from realtime.sql import RowLoader, column, fetch_one, insert, table
from sessions_app import selectors
from sessions_app.models import CollabSession, Message, Role
from tests.conftest import token_for

pytestmark = pytest.mark.django_db


def _field_values(instance: Model) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


def _load(model: type[Model], pk_value) -> Model:
    loader = RowLoader(model, "x")
    pk = model._meta.pk
    value = pk.get_db_prep_value(pk_value, connection)
    row = fetch_one(f"SELECT {loader.columns} FROM {table(model)} x WHERE x.{column(model, pk.name)} = %s", [value])
    return loader.load(row)


@pytest.mark.parametrize("model", [CollabSession, get_user_model(), Message, Event])
def test_a_row_loader_gives_the_instance_the_orm_gives(model, collab, alice):
    from sessions_app import services

    services.message_post(session=collab, author=alice, content="hello")
    orm = model.objects.order_by("pk").first()
    loaded = _load(model, orm.pk)
    assert _field_values(loaded) == _field_values(orm)
    for name, value in _field_values(orm).items():
        assert type(getattr(loaded, name)) is type(value), name  # a UUID stays a UUID, not text
    assert loaded._state.adding is False


def test_insert_stores_what_save_would_store(collab, alice):
    saved = Message(session=collab, author=alice, content="via save 💬")
    saved.save()
    inserted = Message(session=collab, author=alice, content="via insert 💬")
    insert(inserted)
    assert inserted._state.adding is False
    first, second = (Message.objects.get(pk=m.pk) for m in (saved, inserted))
    assert isinstance(second.pk, UUID)
    assert second.content == "via insert 💬"
    assert second.created_at.tzinfo is not None
    expected = _field_values(first) | {"id": second.pk, "content": second.content, "created_at": second.created_at}
    assert _field_values(second) == expected


def test_insert_reads_back_a_generated_primary_key(collab):
    event = Event(session=collab, seq=collab.last_event_id + 1, type="session_updated", data={"title": "x"})
    insert(event)
    assert isinstance(event.pk, int)
    assert Event.objects.get(pk=event.pk).data == {"title": "x"}


def test_session_lookup_gives_members_their_role_and_staff_none(collab, bob, staff_user, outsider):
    session, role = selectors.session_get_for_user(session_id=collab.pk, user=bob)
    assert (session.pk, session.title, role) == (collab.pk, "Planning", Role.EDITOR)
    assert selectors.session_get_for_user(session_id=str(collab.pk), user=staff_user)[1] is None
    with pytest.raises(selectors.SessionNotFound):
        selectors.session_get_for_user(session_id=collab.pk, user=outsider)


def test_rest_token_authentication_gives_the_user_and_the_token(api, collab, bob):
    from rest_framework.test import APIRequestFactory

    from sessions_app.authentication import TokenAuthentication

    key = token_for(bob)
    request = APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Token {key}")
    user, token = TokenAuthentication().authenticate(request)
    assert user == bob and user.username == "bob" and user.is_active
    stored = AuthToken.objects.get(token_key=key[:15])
    assert token == stored and token.user is user
    assert _field_values(token) == _field_values(stored)


def test_rest_refuses_the_token_of_an_inactive_user(api, collab, bob):
    client = api(bob)
    bob.is_active = False
    bob.save()
    response = client.get(f"/api/v1/sessions/{collab.pk}/")
    assert response.status_code == 401
    assert response.json() == {"detail": "User inactive or deleted."}
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.services
def test_hot_statements_are_prepared_on_postgresql(collab, alice):
    """PostgreSQL plans a prepared statement once: the opening query cost 4x less of its CPU."""
    from django.conf import settings

    from tests.conftest import IN_CI

    if connection.vendor != "postgresql":
        message = "needs DATABASE_URL pointing at PostgreSQL"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    options = settings.DATABASES["default"]["OPTIONS"]
    assert options["server_side_binding"] is True and options["prepare_threshold"] == 5
    for _ in range(6):
        selectors.session_get_for_user(session_id=collab.pk, user=alice)
    sql, _ = selectors._session_with_role()
    prepared = fetch_one("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", [sql[:60] + "%"])
    assert prepared == (1,)


@pytest.mark.services
def test_the_token_lookup_is_prepared_on_postgresql(bob, settings):
    """The REST token lookup (knox token and user, one join) runs on every API request whose
    token the process has not verified lately (here: never, the cache is off)."""
    settings.CHORUS_TOKEN_CACHE_SECONDS = 0
    from tests.conftest import IN_CI

    if connection.vendor != "postgresql":
        message = "needs DATABASE_URL pointing at PostgreSQL"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    from sessions_app.authentication import _token_user, token_lookup

    key = token_for(bob)
    for _ in range(6):
        assert token_lookup(key).user == bob
    sql, _, _ = _token_user()
    prepared = fetch_one("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", [sql[:60] + "%"])
    assert prepared == (1,)


def test_insert_falls_back_to_save_for_a_model_with_signal_receivers(collab, alice):
    from django.db.models.signals import post_save

    seen = []

    def receiver(sender, instance, created, **kwargs):
        seen.append((instance.content, created))

    post_save.connect(receiver, sender=Message)
    try:
        insert(Message(session=collab, author=alice, content="heard"))
    finally:
        post_save.disconnect(receiver, sender=Message)
    assert seen == [("heard", True)]
    assert Message.objects.filter(content="heard").count() == 1
