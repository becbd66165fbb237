"""Logging through structlog: JSON lines off a terminal (journald, Loki), readable lines on one.

Every line carries `app`, `color`, `image` and `reconcile_id` where known (bound by the reconciler).
`redact_secrets` is the last line of defence: any registered secret value is masked in every field.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
MASK = "[REDACTED]"


def register_secret(value: str) -> None:
    """Mask `value` in every log line from now on (values shorter than 4 chars would mask too much)."""
    if len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def _mask(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for s in secrets:
            if s in value:
                value = value.replace(s, MASK)
        return value
    if isinstance(value, dict):
        return {k: _mask(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask(v, secrets) for v in value)
    if isinstance(value, BaseException):
        return _mask(str(value), secrets)
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    if not secrets:
        return event_dict
    return {k: _mask(v, secrets) for k, v in event_dict.items()}


def redact_text(text: str) -> str:
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    result: str = _mask(text, secrets)
    return result


def configure(fmt: str = "auto", stream: TextIO | None = None, level: str = "info") -> None:
    """fmt: auto (console on a terminal, JSON otherwise), json or console."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(int(getattr(logging, level.upper()))),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger("bluegreen").bind(**bind)
