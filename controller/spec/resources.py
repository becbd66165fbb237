"""`spec.resources` (issue 14): Docker limits for both colors, and the strict size syntax they are written in.

Sizes are `<digits><unit>` with unit k, m or g in either case, binary multiples like `docker run --memory`
(1k = 1024 bytes, 1g = 1024^3). Nothing else is accepted: no bare number (YAML `1024` would be 1024 *bytes*
to Docker), no fraction (`1.5g`: write `1536m`), no `b`/`ib` suffix, no sign, no spaces, no zero (Docker reads
0 as "unlimited": omit the field instead). A refusal is one line naming the field (exit 2).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KIB, MIB, GIB = 1024, 1024**2, 1024**3
_UNITS = {"k": KIB, "m": MIB, "g": GIB}
SIZE_PATTERN = r"^[0-9]{1,15}[kKmMgG]$"
_SIZE_RE = re.compile(SIZE_PATTERN)
MEMORY_MIN = 6 * MIB  # Docker's own minimum for --memory; below it `docker run` fails
MEMORY_MAX = 1024 * GIB  # more than any single host this controller runs on: a typo, not a limit
CPUS_MAX = 1024.0
PIDS_MAX = 4_194_304  # the kernel's PID_MAX_LIMIT on 64-bit


def parse_size(value: object, field: str) -> int:
    """Bytes of a size written as `<digits><k|m|g>` (either case); ValueError with a one-line reason."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{field} must be a size such as 512m or 1g")
    if not isinstance(value, str):
        raise ValueError(f"{field} {value!r} has no unit: write it as <digits>k, m or g (e.g. 512m, 1g)")
    if not _SIZE_RE.match(value):
        raise ValueError(
            f"{field} {value!a} is not a size: write <digits> then k, m or g (binary: 1g = 1024m; no fraction, sign or 'b')"
        )
    n = int(value[:-1]) * _UNITS[value[-1].lower()]
    if n == 0:
        raise ValueError(f"{field} must be more than 0 (omit the field for no limit)")
    if n < MEMORY_MIN:
        raise ValueError(f"{field} {value} is below Docker's minimum of 6m")
    if n > MEMORY_MAX:
        raise ValueError(f"{field} {value} is more than 1024g")
    return n


def human(n: int | float) -> str:
    """Bytes as people read them in a message: 1.5 GiB, 812 MiB, 64 KiB (one decimal above 10 units: none)."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(n) >= size:
            v = n / size
            return f"{v:.1f} {unit}" if abs(v) < 10 and v != int(v) else f"{v:.0f} {unit}"
    return f"{int(n)} B"


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    memory: str | None = Field(
        None,
        json_schema_extra={"pattern": SIZE_PATTERN},
        description="Hard memory limit of each color (docker --memory), e.g. 512m or 1g: <digits> then k, m or g, binary multiples.",
    )
    memoryReservation: str | None = Field(
        None,
        json_schema_extra={"pattern": SIZE_PATTERN},
        description="Soft limit (docker --memory-reservation); not more than memory.",
    )
    cpus: float | None = Field(
        None, ge=0.01, le=CPUS_MAX, description="CPU quota of each color (docker --cpus), 0.01 to 1024 in steps of 0.01; not more than the host has."
    )
    pidsLimit: int | None = Field(None, ge=1, le=PIDS_MAX, description="Most processes/threads per color (docker --pids-limit).")
    skipCapacityCheck: bool = Field(
        False,
        strict=True,  # true or false, not "yes"/1: an override is written on purpose
        description="Start a new color even when the capacity check finds too little memory or disk (docs/operations.md).",
    )

    @field_validator("memory", "memoryReservation", mode="before")
    @classmethod
    def _size(cls, v: Any, info: Any) -> Any:
        if v is not None:
            parse_size(v, info.field_name)
        return v

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"cpus must be a number such as 1.5, not {type(v).__name__} {v!a}")
        if not 0.01 <= v <= CPUS_MAX:
            raise ValueError(f"cpus {v} is out of range: 0.01 to {CPUS_MAX:g}")
        if abs(round(v * 100) - v * 100) > 1e-6:
            raise ValueError(f"cpus {v} has more than two decimals (steps of 0.01)")
        return float(v)

    @field_validator("pidsLimit", mode="before")
    @classmethod
    def _pids(cls, v: Any) -> Any:
        if isinstance(v, bool) or (v is not None and not isinstance(v, int)):
            raise ValueError("pidsLimit must be a whole number (omit the field for no limit)")
        return v

    @model_validator(mode="after")
    def _reservation(self) -> Resources:
        limit, reservation = self.memory_bytes, self.reservation_bytes
        if limit is not None and reservation is not None and reservation > limit:
            raise ValueError(f"memoryReservation {self.memoryReservation} is more than memory {self.memory} (Docker refuses it)")
        return self

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_size(self.memory, "memory")

    @property
    def reservation_bytes(self) -> int | None:
        return None if self.memoryReservation is None else parse_size(self.memoryReservation, "memoryReservation")

    @property
    def nano_cpus(self) -> int | None:
        return None if self.cpus is None else round(self.cpus * 1e9)

    def limits(self) -> dict[str, Any]:
        """The limits that are set, as written (for the revision hash and status); {} when none is."""
        out: dict[str, Any] = {"memory": self.memory, "memoryReservation": self.memoryReservation, "cpus": self.cpus, "pidsLimit": self.pidsLimit}
        return {k: v for k, v in out.items() if v is not None}

    def revision_input(self) -> dict[str, int]:
        """The limits in Docker's units (bytes, nano-CPUs): `1g` and `1024m` are the same revision."""
        out = {"memory": self.memory_bytes, "memoryReservation": self.reservation_bytes, "nanoCpus": self.nano_cpus, "pidsLimit": self.pidsLimit}
        return {k: v for k, v in out.items() if v is not None}

    def describe(self) -> str:
        """`memory=1g cpus=1.5 ...`, or "" when no limit is set."""
        return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.limits().items())
