"""The JSON documents the controller keeps (state dir): typed, checked as a whole by pydantic when untrusted.

A document is a frozen dataclass of the module that owns it (`documents.Status`, `facts.MemoryFile`,
`documents.FailoverState`, `verify.Window`, `counters.CountersFile`, `releases.Releases`): plain values for the code that uses it,
described by pydantic-free markers in its annotations (`Alias` for a JSON name, annotated_types ranges, `TRUE_FALSE`,
`After`, a class's `OMIT_NONE`) and `Stored`'s strict config (no coercion, no unknown key, no NaN or infinity).
`Document(T)` reads and writes one. pydantic is imported, and the TypeAdapter built, only when a document must
be validated: a file whose bytes are not the ones this controller last wrote (see controller/store/state.py's
digests). Everything else (`dump`, `text`, `decode_trusted`) is a generic codec driven by the same annotations,
held to pydantic's bytes by tests/test_document_codec.py.

A file another version, a torn write or a hand edit left behind is refused as a whole with one `Corrupt`
error, not a TypeError deep inside a pass. The error names the field by its place in our format only: file
contents (values, and keys that are data such as revisions) are never echoed.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, TypeVar, Union

from annotated_types import Interval

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, TypeAdapter, ValidationError
    from pydantic_core import CoreSchema

T = TypeVar("T")

MAX_INT = 2**53  # larger integers are not exact in JSON readers (JavaScript, jq): no field of ours needs them

Count = Annotated[int, Interval(ge=0, le=MAX_INT)]
Epoch = Annotated[float, Interval(ge=0, le=MAX_INT)]  # seconds since the epoch (or a duration)


class Corrupt(ValueError):
    """A state file that does not have the shape this version writes."""


@dataclasses.dataclass(frozen=True)
class Alias:
    """A field's JSON name (in `Annotated[...]`), when it is not the attribute's."""

    name: str


class _TrueFalse:
    """A bool written "True" or "False" (as Kubernetes writes a condition's status)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            _true_false,
            serialization=core_schema.plain_serializer_function_ser_schema(_true_false_text, return_schema=core_schema.str_schema()),
        )


def _true_false(v: object) -> bool:
    if v == "True" or v == "False":
        return v == "True"
    raise ValueError("not True or False")


def _true_false_text(b: bool) -> str:
    return "True" if b else "False"


TRUE_FALSE = _TrueFalse()


@dataclasses.dataclass(frozen=True)
class After:
    """A check run after the type's own validation (pydantic's AfterValidator); trusted files skip it."""

    check: Callable[[Any], Any]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self.check, handler(source))


class Stored:
    """Base of every document dataclass: strict, unknown keys refused (pydantic reads `__pydantic_config__`).

    `OMIT_NONE`: JSON names of fields left out of the document when they are None."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset()
    __pydantic_config__: ClassVar[dict[str, Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # a pydantic ConfigDict is a plain dict: the JSON names come from the `Alias` markers
        cls.__pydantic_config__ = {"strict": True, "extra": "forbid", "allow_inf_nan": False, "alias_generator": _Aliases(cls)}

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema = handler(source)
        if cls.OMIT_NONE:
            from pydantic_core import core_schema

            keys = cls.OMIT_NONE

            def without_none(value: object, dump: Callable[[object], dict[str, Any]]) -> dict[str, Any]:
                return {k: v for k, v in dump(value).items() if v is not None or k not in keys}

            typing.cast(dict[str, Any], schema)["serialization"] = core_schema.wrap_serializer_function_ser_schema(without_none)
        return schema


class _Aliases:
    """pydantic's alias generator for one document class: a field's `Alias`, else its name."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def __call__(self, name: str) -> str:
        return _fields(self.cls)[name][0]


_FIELDS: dict[type, dict[str, tuple[str, Any]]] = {}


def _fields(cls: type) -> dict[str, tuple[str, Any]]:
    """A document class's fields: attribute name -> (JSON name, type hint with its markers)."""
    out = _FIELDS.get(cls)
    if out is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        out = {}
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            alias = next((m.name for m in getattr(hint, "__metadata__", ()) if isinstance(m, Alias)), f.name)
            out[f.name] = (alias, hint)
        _FIELDS[cls] = out
    return out


class Document(Generic[T]):
    """Reads and writes one kind of document: `parse` (validates; raises Corrupt), `decode_trusted` (bytes this
    controller wrote), `dump` (JSON values), `text`."""

    def __init__(self, kind: type[T]) -> None:
        self.kind = kind

    @cached_property
    def _adapter(self) -> TypeAdapter[T]:
        from pydantic import TypeAdapter  # only a file that must be validated pays for pydantic

        return TypeAdapter(self.kind)

    def parse(self, text: str | bytes) -> T:
        from pydantic import ValidationError

        try:
            return self._adapter.validate_json(text, strict=True)
        except ValidationError as e:
            raise Corrupt(self._problem(e)) from None

    def decode_trusted(self, text: str | bytes) -> T:
        """The document in `text`, which this controller wrote (its digest matched): decoded without validation.
        Should it not decode after all, it is validated (`parse`), never trusted further."""
        try:
            value: T = _decode(json.loads(text), self.kind)
            return value
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return self.parse(text)

    def dump(self, value: T) -> dict[str, Any]:
        out: dict[str, Any] = _encode(value, self.kind)
        return out

    def validated_dump(self, value: T) -> dict[str, Any]:
        """What pydantic dumps of `value` (`dump` writes the same: held to it by tests)."""
        out: dict[str, Any] = self._adapter.dump_python(value, mode="json", by_alias=True)
        return out

    def text(self, value: T) -> str:
        """The file's text: sorted keys, indented, a final newline (the format every state file has had)."""
        return json.dumps(self.dump(value), indent=2, sort_keys=True) + "\n"

    @cached_property
    def _names(self) -> frozenset[str]:
        """The JSON names of every field of the document (what an error may show of a path)."""
        return frozenset(_field_names(self._adapter.core_schema))

    def _problem(self, e: ValidationError) -> str:
        first = e.errors(include_url=False, include_context=False, include_input=False)[0]
        if first["type"] == "json_invalid":
            return "not JSON"  # torn, hand-edited, nested too deep, a number out of range
        if not first["loc"] and first["type"] in ("dataclass_type", "model_type", "dict_type"):
            return "not a JSON object"
        where = ".".join(p if isinstance(p, str) and p in self._names else "[]" for p in first["loc"])
        return f"{where or 'top level'}: {first['msg']}"


def _field_names(schema: object) -> Iterator[str]:
    """Every field name and alias in a pydantic core schema (a tree of dicts and lists)."""
    if isinstance(schema, dict):
        if schema.get("type") == "dataclass-field":
            yield schema["name"]
            alias = schema.get("validation_alias")
            if isinstance(alias, str):
                yield alias
        for v in schema.values():
            yield from _field_names(v)
    elif isinstance(schema, list):
        for v in schema:
            yield from _field_names(v)


def _bare(hint: Any) -> tuple[Any, bool]:
    """`hint` without its markers and without None (an optional's one other arm); whether it is TRUE_FALSE."""
    if typing.get_origin(hint) is Annotated:
        if any(m is TRUE_FALSE for m in hint.__metadata__):
            return bool, True
        return _bare(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        return _bare(arms[0]) if len(arms) == 1 else (Any, False)
    return hint, False


def _item(hint: Any) -> Any:
    """The hint of a container's items (a dict's values)."""
    args = typing.get_args(hint)
    return args[-1] if typing.get_origin(hint) is dict else (args[0] if args else Any)


def _encode(value: Any, hint: Any) -> Any:
    """`value` as pydantic dumps it (mode json, by alias), from its type hint and its runtime type."""
    hint, true_false = _bare(hint)
    if value is None:
        return None
    if true_false:
        return _true_false_text(value)
    if isinstance(value, Stored):
        cls = type(value)
        out = {}
        for name, (key, h) in _fields(cls).items():
            v = _encode(getattr(value, name), h)
            if v is not None or key not in cls.OMIT_NONE:
                out[key] = v
        return out
    if isinstance(value, (tuple, list)):
        return [_encode(v, _item(hint)) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v, _item(hint)) for k, v in value.items()}
    if hint is float and type(value) is int:
        return float(value)
    return value


def _decode(data: Any, hint: Any) -> Any:
    """The value of `data` (JSON values this controller wrote) as `hint` types it."""
    hint, true_false = _bare(hint)
    if data is None:
        return None
    if true_false:
        return data == "True"
    if isinstance(hint, type) and issubclass(hint, Stored):
        fields = _fields(hint)
        if len(data) != sum(key in data for key, _ in fields.values()):
            raise KeyError("a key this version does not write")
        return hint(**{name: _decode(data[key], h) for name, (key, h) in fields.items() if key in data})
    origin = typing.get_origin(hint)
    if origin is tuple:
        return tuple(_decode(v, _item(hint)) for v in data)
    if origin is list:
        return [_decode(v, _item(hint)) for v in data]
    if origin is dict:
        return {k: _decode(v, _item(hint)) for k, v in data.items()}
    if hint is float and type(data) is int:
        return float(data)
    return data


