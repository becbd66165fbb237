"""Durations that survive a restart and ignore wall-clock steps: seconds counted on the monotonic clock.

A persisted deadline on the wall clock wedges or vanishes when the clock steps (NTP, an operator): a day back
and a window has a day left; two minutes forward and it is over unjudged. So a duration the controller judges
(a verification window, failing-since) is kept as the seconds counted so far and the monotonic reading they
were counted at (`World.monotonic`, CLOCK_MONOTONIC: system-wide, so a later run of the same boot counts the
time in between too). A reading of another boot (`World.boot_id`: a reboot restarts the clock, and a later uptime
can exceed the last reading), or one below the last, adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import MaxLen

from controller.kernel.document import Epoch, Stored


@dataclass(frozen=True)
class Elapsed(Stored):
    seconds: Epoch  # counted so far
    mono: Epoch  # the monotonic clock when last counted
    boot: Annotated[str, MaxLen(64)] | None = None  # the boot `mono` was read in; None: unknown (files before it)

    OMIT_NONE = frozenset({"boot"})

    def at(self, mono: float, boot: str | None = None) -> Elapsed:
        """Counted up to monotonic reading `mono` of boot `boot` (None or "": unknown, taken as the same)."""
        gap = mono - self.mono
        same = not self.boot or not boot or boot == self.boot
        return Elapsed(self.seconds + gap if gap >= 0 and same else self.seconds, mono, boot or self.boot)

    @classmethod
    def since_wall(cls, start: float, now: float, mono: float, cap: float, boot: str | None = None) -> Elapsed:
        """For a document written without it: the wall-clock age of `start`, within [0, cap] (a step either way
        can make it negative or huge)."""
        return cls(min(max(0.0, now - start), cap), mono, boot)
