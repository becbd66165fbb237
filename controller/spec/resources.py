"""`spec.resources` (issue 14): Docker limits for both colors, and the strict size syntax they are written in.

Sizes are `<digits><unit>` with unit k, m or g in either case, binary multiples like `docker run --memory`
(1k = 1024 bytes, 1g = 1024^3). Nothing else is accepted: no bare number (YAML `1024` would be 1024 *bytes*
to Docker), no fraction (`1.5g`: write `1536m`), no `b`/`ib` suffix, no sign, no spaces, no zero (Docker reads
0 as "unlimited": omit the field instead). A refusal is one line naming the field (exit 2).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.spec.base import (  # noqa: F401  (re-exported: the pydantic-free part; pyproject.toml: implicit_reexport)
    GIB,
    KIB,
    MEMORY_MAX,
    MEMORY_MIN,
    MIB,
    SIZE_PATTERN,
    ResourcesRules,
    human,
    parse_size,
)

CPUS_MAX = 1024.0
PIDS_MAX = 4_194_304  # the kernel's PID_MAX_LIMIT on 64-bit


class Resources(ResourcesRules, BaseModel):
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
