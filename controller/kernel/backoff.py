"""The one backoff formula: capped exponential. Bottom layer: imports nothing of the controller.

Used for the failed-deploy memory (`facts.Failure.next_retry_at`, `--backoff-base/--backoff-max`), for the
requeue after temporary errors (`requeue.decide`) and for watch mode's reconnects. It has no jitter: the
memory's retry instant must be the same for cron and watch; watch mode jitters its own delays.
"""

from __future__ import annotations

from dataclasses import dataclass

# 2**64 times any sane base exceeds any sane cap; a larger exponent would overflow a float (a hand-edited
# memory.json with count 5000 must back off to the cap, not crash the pass).
_MAX_DOUBLINGS = 64


def backoff(attempt: int, base: float, cap: float) -> float:
    """The delay after the `attempt`-th consecutive failure (1-based): base, 2·base, 4·base, ..., at most cap."""
    doublings = min(max(0, attempt - 1), _MAX_DOUBLINGS)
    return float(min(cap, base * 2.0**doublings))


@dataclass(frozen=True)
class BackoffPolicy:
    """How long a failed revision waits before it is tried again (`--backoff-base`, `--backoff-max`)."""

    base: float = 60.0
    cap: float = 3600.0

    def delay(self, attempt: int) -> float:
        return backoff(attempt, self.base, self.cap)


DEFAULT_POLICY = BackoffPolicy()  # the CLI's defaults (`--backoff-base 60 --backoff-max 3600`)
