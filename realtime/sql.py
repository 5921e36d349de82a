"""Hand-written SQL for the hot path of opening streams.

A reconnect storm opens thousands of streams at once, and each opening asks the database
three small questions (who is this token, may they read, what is the newest id). Measured
on PostgreSQL, compiling those ORM queries cost more CPU than running them: over half of
3.2 ms per opened stream. These statements are built once from the models' `_meta` (so the
models stay the source of truth for names) and run with a plain cursor.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Model, signals


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[Model], field_name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(field_name).column)


def db_value(model: type[Model], field_name: str, value: Any) -> Any:
    """`value` as the database stores it (a UUID is a hex string on SQLite)."""
    return model._meta.get_field(field_name).get_db_prep_value(value, connection)


def fetch_one(sql: str, params: list[Any]) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def fetch_all(sql: str, params: list[Any]) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def cached_sql(build):
    """Build a statement once per process (the names never change at run time)."""
    return cache(build)


class RowLoader:
    """Model instances from a hand-written SELECT of all the model's concrete columns,
    converted as the ORM converts them (a UUID from SQLite's text, JSON, aware datetimes).

    Build one per model at first use (`cached_sql`); converters take the connection as an
    argument, so one loader serves every thread.
    """

    def __init__(self, model: type[Model], alias: str) -> None:
        fields = model._meta.concrete_fields
        self.model = model
        self.columns = ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in fields)
        self.attnames = [f.attname for f in fields]
        self.width = len(fields)
        self.converters = []
        for index, field in enumerate(fields):
            col = field.get_col(model._meta.db_table)
            for converter in connection.ops.get_db_converters(col) + col.get_db_converters(connection):
                self.converters.append((index, converter, col))

    def load(self, values: tuple | list) -> Model:
        values = list(values)
        for index, converter, col in self.converters:
            values[index] = converter(values[index], col, connection)
        return self.model.from_db(connection.alias, self.attnames, values)


@cache
def _insert_plan(model: type[Model], vendor: str) -> tuple[str, list, bool]:
    fields = [f for f in model._meta.concrete_fields if not (f.primary_key and f.db_returning)]
    returning = len(fields) < len(model._meta.concrete_fields)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    sql = f"INSERT INTO {table(model)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
    if returning:
        sql += f" RETURNING {connection.ops.quote_name(model._meta.pk.column)}"
    return sql, fields, returning


def insert(instance: Model) -> None:
    """`instance.save()` for a new row without the ORM's compile step. Values go through
    each field's `pre_save` and `get_db_prep_save`, as in `save()`, so what is stored is
    what `save()` would store. A model with save signal receivers is saved by `save()`,
    so that nobody's receiver is skipped."""
    model = type(instance)
    if signals.pre_save.has_listeners(model) or signals.post_save.has_listeners(model):
        instance.save(force_insert=True)
        return
    sql, fields, returning = _insert_plan(model, connection.vendor)
    params = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if returning:
            instance.pk = cursor.fetchone()[0]
    instance._state.adding = False
    instance._state.db = connection.alias


@cache
def _insert_select_sql(model: type[Model], source: str, vendor: str) -> str:
    _, fields, returning = _insert_plan(model, vendor)
    if returning:
        raise ValueError(f"{model.__name__}: a database-generated primary key is not supported here")
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    values = ", ".join(f"%s::{f.db_type(connection)}" for f in fields)
    return f"INSERT INTO {table(model)} ({columns}) SELECT {values} FROM {source}"


def insert_select(instance: Model, *, source: str) -> tuple[str, list]:
    """`INSERT INTO … SELECT <instance's values> FROM {source}` and its parameters, for a
    data-modifying CTE on PostgreSQL: the row is inserted once per row of `source` (none
    if `source` is empty). Values are prepared as `insert` prepares them and each is cast
    to its column's type (in a SELECT list a parameter would otherwise be text)."""
    model = type(instance)
    sql = _insert_select_sql(model, source, connection.vendor)
    _, fields, _ = _insert_plan(model, connection.vendor)
    return sql, [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
