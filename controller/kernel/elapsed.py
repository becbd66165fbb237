"""Durations that survive a restart and ignore wall-clock steps: seconds counted on the monotonic clock.

A persisted deadline on the wall clock wedges or vanishes when the clock steps (NTP, an operator): a day back
and a window has a day left; two minutes forward and it is over unjudged. So a duration the controller judges
(a verification window, failing-since) is kept as the seconds counted so far and the monotonic reading they
were counted at (`World.monotonic`, CLOCK_MONOTONIC: system-wide, so a later run of the same boot counts the
time in between too). A reading below the last one (a reboot restarts the clock) adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.kernel.document import Epoch, Stored


@dataclass(frozen=True)
class Elapsed(Stored):
    seconds: Epoch  # counted so far
    mono: Epoch  # the monotonic clock when last counted

    def at(self, mono: float) -> Elapsed:
        """Counted up to monotonic reading `mono`."""
        gap = mono - self.mono
        return Elapsed(self.seconds + gap if gap >= 0 else self.seconds, mono)

    @classmethod
    def since_wall(cls, start: float, now: float, mono: float, cap: float) -> Elapsed:
        """For a document written without it: the wall-clock age of `start`, within [0, cap] (a step either way
        can make it negative or huge)."""
        return cls(min(max(0.0, now - start), cap), mono)
