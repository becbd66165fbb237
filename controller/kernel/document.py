"""The JSON documents the controller keeps (state dir): typed, checked as a whole by pydantic.

A document is a frozen dataclass of the module that owns it (`documents.Status`, `facts.MemoryFile`,
`documents.FailoverState`, `verify.Window`, `counters.CountersFile`, `releases.Releases`): plain values for the code that uses it,
described for pydantic by its annotations (JSON names as aliases, ranges) and `Stored`'s strict config (no
coercion, no unknown key, no NaN or infinity). `Document(T)` reads and writes one; its TypeAdapter is built
on first use, once per process, never per pass.

A file another version, a torn write or a hand edit left behind is refused as a whole with one `Corrupt`
error, not a TypeError deep inside a pass. The error names the field by its place in our format only: file
contents (values, and keys that are data such as revisions) are never echoed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cached_property
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import ConfigDict, Field, SerializerFunctionWrapHandler, TypeAdapter, ValidationError

T = TypeVar("T")

MAX_INT = 2**53  # larger integers are not exact in JSON readers (JavaScript, jq): no field of ours needs them

Count = Annotated[int, Field(ge=0, le=MAX_INT)]
Epoch = Annotated[float, Field(ge=0, le=MAX_INT)]  # seconds since the epoch (or a duration)


class Corrupt(ValueError):
    """A state file that does not have the shape this version writes."""


class Stored:
    """Base of every document dataclass: strict, unknown keys refused (pydantic reads `__pydantic_config__`)."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


def omit_none(handler: SerializerFunctionWrapHandler, value: object, keys: frozenset[str]) -> dict[str, Any]:
    """For a wrap serializer: `value` dumped, without those of `keys` (JSON names) that are null."""
    out: dict[str, Any] = handler(value)
    return {k: v for k, v in out.items() if v is not None or k not in keys}


class Document(Generic[T]):
    """Reads and writes one kind of document: `parse` (raises Corrupt), `dump` (JSON values), `text`."""

    def __init__(self, kind: type[T]) -> None:
        self.kind = kind

    @cached_property
    def _adapter(self) -> TypeAdapter[T]:
        return TypeAdapter(self.kind)

    def parse(self, text: str | bytes) -> T:
        try:
            return self._adapter.validate_json(text, strict=True)
        except ValidationError as e:
            raise Corrupt(self._problem(e)) from None

    def dump(self, value: T) -> dict[str, Any]:
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
