"""Logging through structlog: JSON lines off a terminal (journald, Loki), readable lines on one.

Every line carries `app`, `color`, `image` and `reconcile_id` where known (bound by the reconciler).
`redact_secrets` is the last line of defence: any registered secret value is masked in every field but the
label fields; `redact_json_text` does the same for the state files (status.json, memory.json, history.jsonl).

Masking rule (docs/secrets.md, "Redaction"):
- LABEL_FIELDS are never masked: they hold identifiers and enums the controller makes (app name, color, event
  name, reconcile id, timestamps, hashes), never a secret, and Loki, the alerts and `--history` select on them.
  Masking them because a secret happens to equal `green` or the app name would break those, not protect.
- A secret of MIN_SUBSTRING characters or more is masked wherever it occurs, also inside a longer word.
- A shorter secret is masked only where it stands as a whole word (not preceded or followed by a letter, digit
  or `_`): `pin=ab12` and `"ab12"` lose it, `evergreen` keeps its `green`. Masking it inside words too would
  blank every line; ignoring it (as before) would print it. A short secret inside a longer word is not leaked
  as such: nothing tells which part of the word it is.
- A value is registered with the forms of it an output may carry (`secret_forms`): its JSON-escaped text, each
  line of a multi-line value (a PEM key printed indented or one line at a time), and its base64 encoding
  (standard and URL-safe, whole and in the 76-column lines `base64` prints); a line or a piece of MIN_FRAGMENT
  characters or more is masked on its own.
- Text is redacted whole, before anything cuts it: a multi-line value matches only across its lines, and a cut
  inside a value leaves a fragment no rule matches (controller/app/steps/gates.py, controller/drivers/gates.py).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
MASK = "[REDACTED]"
MIN_SUBSTRING = 8
MIN_FRAGMENT = 16  # a line or a base64 piece of a secret this long is masked on its own
BASE64_COLUMNS = 76  # `base64`'s (coreutils, busybox) and MIME's line length
LABEL_FIELDS = frozenset(
    {
        # log lines (promtail extracts these; see monitoring/promtail)
        "app", "color", "action", "event", "level", "timestamp", "logger", "logger_name", "reconcile_id", "image",
        # state files: identifiers, enums and times written by the controller
        "reconcileId", "outcome", "time", "at", "updatedAt", "lastTransitionTime", "activeColor", "serving",
        "standby", "revision", "generation", "observedGeneration", "convergedGeneration", "type",
        "from", "status",  # lastDeploy.from (a color), a condition's status (True/False): read back typed
    }
)  # fmt: skip


def register_secret(value: str) -> None:
    """Mask `value`, and the forms of it an output may carry, in every log line and state file from now on."""
    if value:
        forms = secret_forms(value)
        with _secrets_lock:
            _secrets.update(forms)


def secret_forms(value: str) -> set[str]:
    """`value`, its JSON-escaped text, its lines of MIN_FRAGMENT+ characters, and its base64 encodings.

    base64: of the value's first 3*k bytes, whose encoding does not depend on what follows the value (`echo`'s
    newline, padding); whole (`base64 -w0`, a Basic auth header) and cut at BASE64_COLUMNS (`base64`'s lines).
    Only encodings that start at the value's first byte: one taken from inside a longer encoded text is not.
    """
    forms = {value, json.dumps(value)[1:-1]}
    forms.update(line.strip() for line in value.splitlines() if len(line.strip()) >= MIN_FRAGMENT)
    raw = value.encode()
    aligned = raw[: len(raw) // 3 * 3]
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = encode(aligned).decode()
        pieces = [text] + [text[i : i + BASE64_COLUMNS] for i in range(0, len(text), BASE64_COLUMNS)]
        forms.update(p for p in pieces if len(p) >= MIN_FRAGMENT)
    return forms


def _pattern() -> re.Pattern[str] | None:
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)  # longest first: a secret inside another goes too
    if not secrets:
        return None
    return re.compile("|".join(_alternative(s) for s in secrets))


def _alternative(secret: str) -> str:
    if len(secret) >= MIN_SUBSTRING:
        return re.escape(secret)
    # Whole word: no word character may touch a word-character edge of the secret.
    before = r"(?<!\w)" if re.match(r"\w", secret[0]) else ""
    after = r"(?!\w)" if re.match(r"\w", secret[-1]) else ""
    return before + re.escape(secret) + after


def _mask(value: Any, pattern: re.Pattern[str], key: Any = None) -> Any:
    if key in LABEL_FIELDS:
        return value
    if isinstance(value, str):
        return pattern.sub(MASK, value)
    if isinstance(value, dict):
        return {k: _mask(v, pattern, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask(v, pattern) for v in value)
    if isinstance(value, BaseException):
        return pattern.sub(MASK, str(value))
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    pattern = _pattern()
    if pattern is None:
        return event_dict
    return {k: _mask(v, pattern, k) for k, v in event_dict.items()}


def redact_text(text: str) -> str:
    pattern = _pattern()
    return text if pattern is None else pattern.sub(MASK, text)


# A JSON string token (json.dumps output: no raw control characters) and whether a `:` follows (a key).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?')


def redact_json_text(text: str) -> str:
    """Mask secrets in serialised JSON (one document or JSON lines) before it is written to a state file.

    Only string values change, each decoded, masked and re-encoded, so the result is still valid JSON with
    the same layout and keys; values of LABEL_FIELDS keys are kept, as in log lines. Text that is not JSON
    is masked as plain text.
    """
    pattern = _pattern()
    if pattern is None:
        return text
    if not _is_json(text):
        return pattern.sub(MASK, text)
    out: list[str] = []
    pos = 0
    key: str | None = None
    key_end = -1
    for m in _JSON_STRING.finditer(text):
        decoded = json.loads(m.group(0) if m.group(1) is None else m.group(0)[: m.start(1) - m.start()])
        if m.group(1) is not None:  # a key: kept, remembered for its value
            key, key_end = decoded, m.end()
            continue
        is_label = key in LABEL_FIELDS and text[key_end : m.start()].strip() == ""
        masked = decoded if is_label else pattern.sub(MASK, decoded)
        if masked != decoded:
            out.append(text[pos : m.start()])
            out.append(json.dumps(masked))
            pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def _is_json(text: str) -> bool:
    """One JSON document, or JSON lines."""
    try:
        json.loads(text)
        return True
    except ValueError:
        pass
    try:
        for line in text.splitlines():
            json.loads(line)
    except ValueError:
        return False
    return True


_pending: Callable[[], None] | None = None  # the configuration of `configure`, applied at the first log line
_pending_lock = threading.Lock()


def configure(fmt: str = "auto", stream: TextIO | None = None, level: str = "info") -> None:
    """fmt: auto (console on a terminal, JSON otherwise), json or console.

    structlog (and the asyncio it imports) loads at the first `get_logger`, not here: a run that logs nothing
    (`--plan`, `--status`) does not pay for it. A process that has imported it already is configured at once."""
    global _pending
    out = stream or sys.stderr

    def apply() -> None:
        import structlog

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

    with _pending_lock:
        _pending = None if "structlog" in sys.modules else apply
    if _pending is None:
        apply()


def get_logger(**bind: Any) -> Any:
    global _pending
    import structlog

    if _pending is not None:
        with _pending_lock:  # applied once, before any thread logs (a second thread waits here for it)
            if _pending is not None:
                _pending()
                _pending = None
    return structlog.get_logger("bluegreen").bind(**bind)
