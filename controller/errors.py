"""The controller's exception tree, in one place.

Third-party errors (docker SDK, httpx, OSError, botocore) are mapped onto these with
`raise ... from` at the driver boundary, so the rest of the code and the CLI only know this tree.

    ControllerError
    ├── InvalidInput            permanent: fix the input (exit 2)
    │   └── SpecError
    ├── TemporaryError          the world may fix itself: retry with backoff (exit 1)
    │   ├── DockerUnavailable
    │   ├── LockBusy
    │   └── RouteUnverified
    └── PermanentError          this revision will not work as is (exit 1)
        ├── DockerError
        ├── ImageError
        ├── NginxError
        ├── HostError               files or commands on the host (permissions, disk)
        ├── HealthCheckFailed
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

    exit_code = 1

    def __init__(self, message: str) -> None:
        # Keep messages to one line: they end up in cron mail and log lines.
        super().__init__(" ".join(message.split()))


class InvalidInput(ControllerError):
    exit_code = 2


class SpecError(InvalidInput):
    pass


class TemporaryError(ControllerError):
    pass


class DockerUnavailable(TemporaryError):
    pass


class LockBusy(TemporaryError):
    pass


class RouteUnverified(TemporaryError):
    pass


class PermanentError(ControllerError):
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


class SecretsError(PermanentError):
    pass
