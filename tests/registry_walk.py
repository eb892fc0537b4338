"""Walks the domain's event classes and their `Personal(kind)` fields, for the registry tests."""

from __future__ import annotations

import importlib
import pkgutil
import types
import typing
from collections.abc import Iterator
from typing import Any

import msgspec
from eventsourcing.domain import DomainEvent

import picasse.domain
from picasse.domain.aggregates import Aggregate
from picasse.domain.personal import Personal


def domain_event_classes() -> list[type]:
    """Every event class of every aggregate defined in `picasse.domain`."""
    for info in pkgutil.iter_modules(picasse.domain.__path__):
        importlib.import_module(f"picasse.domain.{info.name}")
    found: dict[str, type] = {}
    pending: list[type] = [Aggregate]
    while pending:
        aggregate = pending.pop()
        pending += aggregate.__subclasses__()
        if not aggregate.__module__.startswith("picasse.domain."):
            continue
        for value in vars(aggregate).values():
            if isinstance(value, type) and issubclass(value, DomainEvent):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def personal_fields(annotation: Any, path: str) -> Iterator[tuple[str, Personal]]:
    """(field path, declaration) of every personal field inside one annotation."""
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, Personal):
                yield path, meta
                return
        annotation = annotation.__origin__
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from personal_fields(arg, path)
    elif isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        hints = typing.get_type_hints(annotation, include_extras=True)
        for name in annotation.__struct_fields__:
            yield from personal_fields(hints[name], f"{path}.{name}")


def personal_fields_of(event_class: type) -> list[tuple[str, Personal]]:
    hints = typing.get_type_hints(event_class, include_extras=True)
    return [
        found
        for name, hint in hints.items()
        for found in personal_fields(hint, f"{event_class.__qualname__}.{name}")
    ]


def personal_values(domain_event: Any, kind: str) -> list[Any]:
    """The values of one kind's fields in a decoded event (the sealed ones as they read)."""
    values: list[Any] = []

    def walk(annotation: Any, value: Any) -> None:
        if value is None:
            return
        if typing.get_origin(annotation) is typing.Annotated:
            meta = [m for m in annotation.__metadata__ if isinstance(m, Personal)]
            if meta:
                if meta[0].kind == kind:
                    values.append(value)
                return
            annotation = annotation.__origin__
        origin = typing.get_origin(annotation)
        if origin in (list, tuple) and isinstance(value, list | tuple):
            (inner, *_) = typing.get_args(annotation)
            for item in value:
                walk(inner, item)
        elif origin in (typing.Union, types.UnionType):
            for arg in typing.get_args(annotation):
                walk(arg, value)
        elif isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
            hints = typing.get_type_hints(annotation, include_extras=True)
            for name in annotation.__struct_fields__:
                walk(hints[name], getattr(value, name, None))

    hints = typing.get_type_hints(type(domain_event), include_extras=True)
    for name, hint in hints.items():
        walk(hint, getattr(domain_event, name, None))
    return values
