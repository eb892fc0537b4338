"""An enum used in the API's bodies is one component schema of the OpenAPI document, and
Litestar gives that component the description of whichever field using the enum it meets
last: with two different descriptions, the document differed from one process to the next.
So every field of one enum type carries the same description."""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
import typing
from collections import defaultdict

import msgspec

import picasse.adapters.http


def _enum_of(annotation: typing.Any) -> type[enum.Enum] | None:
    for part in typing.get_args(annotation) or (annotation,):
        if inspect.isclass(part) and issubclass(part, enum.Enum):
            return part
    return None


def test_every_field_of_one_enum_in_the_api_bodies_has_the_same_description() -> None:
    descriptions: dict[type[enum.Enum], dict[str, list[str]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for module_info in pkgutil.iter_modules(picasse.adapters.http.__path__):
        module = importlib.import_module(f"picasse.adapters.http.{module_info.name}")
        for struct in vars(module).values():
            if not (inspect.isclass(struct) and issubclass(struct, msgspec.Struct)):
                continue
            if struct.__module__ != module.__name__:
                continue
            hints = typing.get_type_hints(struct, include_extras=True)
            for name, hint in hints.items():
                if typing.get_origin(hint) is not typing.Annotated:
                    continue
                kind = _enum_of(typing.get_args(hint)[0])
                meta = [m for m in hint.__metadata__ if isinstance(m, msgspec.Meta)]
                if kind is None or not meta or meta[0].description is None:
                    continue
                descriptions[kind][meta[0].description].append(f"{struct.__qualname__}.{name}")
    differing = {
        kind.__name__: dict(texts) for kind, texts in descriptions.items() if len(texts) > 1
    }
    assert descriptions, "no enum fields found: the test no longer sees the API's bodies"
    assert not differing, f"give these fields one description per enum: {differing}"
