"""Reads and inserts whose SQL Django builds once per process: the hot paths of the management API.

Building and compiling a queryset costs more CPU than PostgreSQL spends answering a lookup by key
(a third of a group get went there). A `CompiledRead` builds its queryset once per shape with
placeholder values, keeps the SQL Django compiled, and runs it with each call's values: the same
statement and the same rows the ORM would give, so the one queryset that defines a read (its
workspace scoping included) stays the definition.

Strings and lists of strings are parameters (a list gets a shape per length); any other value
(a bool, None, an int such as a page size) is part of the shape and given to the builder as is.

A `CompiledInsert` does the same for `bulk_create` of one new row (most writes insert one row of a
table): the INSERT Django compiles is kept, and each call only prepares its values as the ORM does.
Several rows go to `bulk_create` itself (PostgreSQL inserts them from arrays).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.core.exceptions import EmptyResultSet
from django.db import connections, transaction
from django.db.models import Field, Model, QuerySet
from django.db.models.sql import InsertQuery

M = TypeVar("M", bound=Model)
# Shapes one read keeps (a list parameter makes one per length; past this, reads compile each time).
SHAPES_MAX = 256


class _Slot(str):
    """A placeholder value the builder receives; found again among the compiled parameters."""

    __slots__ = ()


@dataclass(frozen=True)
class _Shape:
    sql: str
    # Per parameter: (None, _, constant), or (name, index or -1, _) for a call's value.
    params: tuple[tuple[str | None, int, Any], ...]
    converters: dict[int, tuple[list[Any], Any]]
    model: type[Model] | None  # model rows: the class and its columns' attnames
    attnames: tuple[str, ...]


class CompiledRead(Generic[M]):
    """A read built by `build(**values)`: `rows()` for a values_list queryset, `objects()` for a
    plain model queryset (no select_related, no annotations)."""

    def __init__(self, build: Callable[..., QuerySet[Any]], *, using: str = "default") -> None:
        self._build, self._using = build, using
        self._shapes: dict[Hashable, _Shape] = {}
        self._lock = threading.Lock()

    def rows(self, **values: Any) -> list[tuple[Any, ...]]:
        """The rows of a values_list read, converted as the ORM converts them."""
        shape = self._shape(values)
        return self._fetch(shape, values)

    def objects(self, **values: Any) -> list[M]:
        """The model instances of a plain model read."""
        shape = self._shape(values)
        rows = self._fetch(shape, values)
        model = shape.model
        if not rows or model is None:
            assert not rows, "objects() reads a model queryset"
            return []
        return [model.from_db(self._using, shape.attnames, row) for row in rows]  # type: ignore[misc]

    def _fetch(self, shape: _Shape, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        if not shape.sql:
            return []
        params = [
            constant if name is None else values[name] if index < 0 else values[name][index]
            for name, index, constant in shape.params
        ]
        connection = connections[self._using]
        with connection.cursor() as cursor:
            cursor.execute(shape.sql, params)
            rows = cursor.fetchall()
        if not shape.converters:
            return [tuple(row) for row in rows]
        converted = []
        for row in rows:
            row = list(row)
            for index, (converters, expression) in shape.converters.items():
                for converter in converters:
                    row[index] = converter(row[index], expression, connection)
            converted.append(tuple(row))
        return converted

    def _shape(self, values: dict[str, Any]) -> _Shape:
        key = tuple(sorted((name, _shape_part(value)) for name, value in values.items()))
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._compile(values)
            with self._lock:
                if len(self._shapes) < SHAPES_MAX:
                    self._shapes[key] = shape
        return shape

    def _compile(self, values: dict[str, Any]) -> _Shape:
        placeholders = {name: _placeholder(name, value) for name, value in values.items()}
        queryset = self._build(**placeholders)
        compiler = queryset.query.get_compiler(using=self._using)
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet:  # `x__in=[]`: the ORM answers nothing without a query, so do we
            return _Shape("", (), {}, None, ())
        slots: set[str] = {
            slot
            for value in placeholders.values()
            for slot in (value if isinstance(value, list) else [value])
            if isinstance(slot, _Slot)
        }
        unseen = slots - {param for param in params if isinstance(param, str)}
        if unseen:
            raise ValueError(f"values the compiled SQL does not take as parameters: {unseen}")
        bound = tuple(
            _binding(param) if isinstance(param, str) and param in slots else (None, -1, param)
            for param in params
        )
        fields = [column[0] for column in compiler.select[: compiler.col_count]]
        converters = compiler.get_converters(fields)
        model, attnames = None, ()
        klass_info = compiler.klass_info
        if klass_info is not None and queryset._fields is None:  # type: ignore[attr-defined]
            if klass_info.get("related_klass_infos") or compiler.annotation_col_map:
                raise ValueError("objects() reads plain model querysets only")
            model = klass_info["model"]
            start = klass_info["select_fields"][0]
            end = klass_info["select_fields"][-1] + 1
            attnames = tuple(column[0].target.attname for column in compiler.select[start:end])
        return _Shape(sql, bound, converters, model, attnames)


class CompiledInsert(Generic[M]):
    """`bulk_create(objs)` of new rows of a model with no database defaults, in one statement and
    without signals (as `bulk_create`); the objects' related objects are saved already. One row
    runs the kept statement; several run `bulk_create`."""

    def __init__(self, model: type[M], *, using: str = "default") -> None:
        meta = model._meta
        if meta.parents or any(
            field.has_db_default() or field.generated  # type: ignore[attr-defined]
            for field in meta.local_concrete_fields
        ):
            raise ValueError(f"{meta.label}: inheritance and database-made values are not kept")
        self._model, self._using = model, using
        self._statements: dict[bool, str] = {}

    def insert(self, objs: list[M]) -> None:
        """Insert `objs` and set their generated keys."""
        if len(objs) != 1:
            self._model._base_manager.using(self._using).bulk_create(objs)
            return
        [obj] = objs
        meta = self._model._meta
        pk_set = obj._is_pk_set()  # type: ignore[attr-defined]
        fields: list[Field[Any, Any]] = [
            field for field in meta.local_concrete_fields if pk_set or field is not meta.auto_field
        ]
        returning = [] if pk_set else [meta.pk]
        statement = self._statements.get(pk_set) or self._compile(obj, fields, pk_set)
        connection = connections[self._using]
        params = []
        for field in fields:
            value = field.pre_save(obj, add=True)
            if hasattr(value, "resolve_expression"):
                raise ValueError(f"insert() takes plain values, not {value!r}")
            params.append(field.get_db_prep_save(value, connection=connection))
        with transaction.mark_for_rollback_on_error(self._using):
            with connection.cursor() as cursor:
                cursor.execute(statement, params)
                row = cursor.fetchone() if returning else None
        if row is not None:
            setattr(obj, meta.pk.attname, row[0])
        obj._state.adding = False
        obj._state.db = self._using

    def _compile(self, obj: M, fields: list[Field[Any, Any]], pk_set: bool) -> str:
        query = InsertQuery(self._model)
        query.insert_values(fields, [obj])
        compiler = query.get_compiler(using=self._using)
        compiler.returning_fields = [] if pk_set else [self._model._meta.pk]
        [(statement, params)] = compiler.as_sql()
        if len(params) != len(fields):
            raise ValueError(f"{self._model._meta.label}: a value that is not one parameter")
        self._statements[pk_set] = statement
        return str(statement)


def _shape_part(value: Any) -> Hashable:
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return ("list", len(value))
    return ("value", value)


def _placeholder(name: str, value: Any) -> Any:
    if isinstance(value, str):
        return _Slot(f"\x00{name}")
    if isinstance(value, list):
        return [_Slot(f"\x00{name}\x00{index}") for index in range(len(value))]
    return value


def _binding(slot: str) -> tuple[str, int, None]:
    name, _, index = slot[1:].partition("\x00")
    return name, int(index) if index else -1, None
