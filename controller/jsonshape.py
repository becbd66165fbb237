"""Reading back the JSON files this controller wrote (status.json, memory.json), type-checked.

A file another version, a torn write or a hand edit left behind must be refused as a whole with one
`Corrupt` error, not crash deep inside with a TypeError on the first field that has another type. The
error names the field by its place in our format only: file contents are never echoed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from controller.specbase import COLORS, Color

MAX_INT = 2**53  # larger integers are not exact in JSON readers (JavaScript, jq): no field of ours needs them


class Corrupt(ValueError):
    """A state file that does not have the shape this version writes."""


class Reader:
    """A JSON object with typed accessors; `where` is the object's place in the file, for messages."""

    def __init__(self, value: object, where: str = "") -> None:
        if not isinstance(value, dict):
            raise Corrupt(f"{where or 'top level'}: not an object")
        self._d: dict[str, Any] = value
        self._where = where

    def _name(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _get(self, key: str) -> object:
        if key not in self._d:
            raise Corrupt(f"{self._name(key)}: missing")
        return self._d[key]

    def has(self, key: str) -> bool:
        return key in self._d

    def text(self, key: str) -> str:
        v = self._get(key)
        if not isinstance(v, str):
            raise Corrupt(f"{self._name(key)}: not a string")
        return v

    def opt_text(self, key: str) -> str | None:
        return None if self._get(key) is None else self.text(key)

    def flag(self, key: str) -> bool:
        v = self._get(key)
        if not isinstance(v, bool):
            raise Corrupt(f"{self._name(key)}: not true or false")
        return v

    def opt_flag(self, key: str) -> bool | None:
        return None if self._get(key) is None else self.flag(key)

    def integer(self, key: str, lo: int = 0, hi: int = MAX_INT) -> int:
        v = self._get(key)
        if not isinstance(v, int) or isinstance(v, bool):
            raise Corrupt(f"{self._name(key)}: not an integer")
        if not lo <= v <= hi:
            raise Corrupt(f"{self._name(key)}: out of range {lo}..{hi}")
        return v

    def opt_integer(self, key: str, lo: int = 0, hi: int = MAX_INT) -> int | None:
        return None if self._get(key) is None else self.integer(key, lo, hi)

    def number(self, key: str, lo: float = 0.0, hi: float = float(MAX_INT)) -> float:
        v = self._get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise Corrupt(f"{self._name(key)}: not a finite number")
        if not lo <= v <= hi:
            raise Corrupt(f"{self._name(key)}: out of range {lo:g}..{hi:g}")
        return float(v)

    def color(self, key: str) -> Color:
        v = self._get(key)
        for c in COLORS:
            if v == c:
                return c
        raise Corrupt(f"{self._name(key)}: not one of {', '.join(COLORS)}")

    def opt_color(self, key: str) -> Color | None:
        return None if self._get(key) is None else self.color(key)

    def obj(self, key: str) -> Reader:
        return Reader(self._get(key), self._name(key))

    def opt_obj(self, key: str) -> Reader | None:
        return None if self._get(key) is None else self.obj(key)

    def array(self, key: str) -> list[object]:
        v = self._get(key)
        if not isinstance(v, list):
            raise Corrupt(f"{self._name(key)}: not a list")
        return v

    def texts(self, key: str) -> tuple[str, ...]:
        items = self.array(key)
        if not all(isinstance(s, str) for s in items):
            raise Corrupt(f"{self._name(key)}: not a list of strings")
        return tuple(str(s) for s in items)

    def objs(self, key: str) -> Iterator[Reader]:
        """The objects of the list at `key`."""
        for v in self.array(key):
            yield Reader(v, f"{self._name(key)}[]")

    def values(self) -> Iterator[tuple[str, Reader]]:
        """This object used as a map: each key with its object value (keys are data: never in messages)."""
        for k, v in self._d.items():
            yield k, Reader(v, f"{self._where}[]" if self._where else "[]")
