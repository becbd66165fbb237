"""The controller's exception tree, in one place.

Third-party errors (docker SDK, httpx, OSError, botocore) are mapped onto these with
`raise ... from` at the driver boundary, so the rest of the code and the CLI only know this tree.

Every error is on one side of the Temporary/Permanent split, and the side decides what happens next
(`controller.app.requeue.decide`, the shape of controller-runtime's TerminalError): a temporary error is
retried with capped exponential backoff; after a permanent one the app waits for a change (a spec edit,
a Docker event, the resync), except a failed deploy, retried at its remembered instant (`--backoff-base`).
`exit_code` is what `reconcile --once` exits with when the error ends the run.

    ControllerError
    ├── TemporaryError          the world may fix itself: retried with backoff (exit 1)
    │   ├── DockerUnavailable
    │   ├── LockBusy
    │   ├── RouteUnverified
    │   ├── ServiceUnavailable      AWS (SSM, ECR) did not answer or throttled: its endpoint, not our input
    │   ├── SourceError             the git source: fetch, verification or checkout failed; the last good commit stays
    │   └── Interrupted             a stop between steps (raised by the executor); no failure: resumed soon
    └── PermanentError          this input or revision will not work as is: wait for a change (exit 1)
        ├── InvalidInput            fix the input (exit 2)
        │   └── SpecError
        ├── DockerError
        ├── ImageError
        ├── NginxError
        ├── HostError               files or commands on the host (permissions, disk)
        ├── HealthCheckFailed       retried at the failed revision's remembered instant
        │   ├── CheckFailed         a spec.checks.beforeSwitch check failed: a failed deploy like it
        │   └── HookFailed          spec.hooks.beforeSwitch exited non-zero, timed out or was lost
        └── SecretsError
"""

from __future__ import annotations

# Process exit codes, the same for every mode (README "Commands and exit codes").
EXIT_OK, EXIT_FAIL, EXIT_INVALID = 0, 1, 2


def one_line(text: object, limit: int = 300) -> str:
    """The first non-empty line of `text` (an exception: its message, else its class name), at most `limit` chars."""
    raw = str(text).strip()
    if not raw and isinstance(text, BaseException):
        raw = type(text).__name__
    first = next((ln.strip() for ln in raw.splitlines() if ln.strip()), "")
    return first[:limit]


class ControllerError(Exception):
    """Base class. `str(err)` is a one-line, operator-facing message."""

    exit_code = EXIT_FAIL

    def __init__(self, message: str) -> None:
        # Keep messages to one line: they end up in cron mail and log lines.
        super().__init__(" ".join(message.split()))


class TemporaryError(ControllerError):
    """The world may fix itself (a daemon restarting, a lock held by another run): retry with backoff."""


class Interrupted(TemporaryError):
    """A stop was requested (SIGTERM) between two steps; the world is left consistent."""


class ServiceUnavailable(TemporaryError):
    """A service the controller needs for this pass (AWS SSM, ECR) did not answer, timed out or throttled."""


class DockerUnavailable(TemporaryError):
    pass


class SourceError(TemporaryError):
    """The git source (controller/runtime/source.py) could not give a new commit; `reason` names why (the condition's)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class LockBusy(TemporaryError):
    """Another run holds the state dir's lock. The facts are kept apart from the sentence, so a caller that
    waited longer than one try (watch mode's PassLock) can say so without editing the message."""

    def __init__(self, path: str, holder_pid: str = "", waited: float = 0.0) -> None:
        holder = f" (pid {holder_pid})" if holder_pid else ""
        super().__init__(f"another reconcile holds {path}{holder}; waited {waited:g}s (--lock-timeout)")
        self.path, self.holder_pid, self.waited = path, holder_pid, waited


class RouteUnverified(TemporaryError):
    pass


class PermanentError(ControllerError):
    """Retrying unchanged input fails the same way: wait for a change (spec edit, Docker event, resync)."""


class InvalidInput(PermanentError):
    exit_code = EXIT_INVALID


class SpecError(InvalidInput):
    pass


class DockerError(PermanentError):
    pass


class ImageError(PermanentError):
    pass


class NginxError(PermanentError):
    pass


class HostError(PermanentError):
    pass


class HealthCheckFailed(PermanentError):
    pass


class CheckFailed(HealthCheckFailed):
    """A before-switch check failed against the new color: the deploy failed, traffic untouched."""


class HookFailed(HealthCheckFailed):
    """The before-switch hook did not exit 0: the deploy failed, traffic untouched."""


class SecretsError(PermanentError):
    pass
