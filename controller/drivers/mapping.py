"""Third-party exceptions onto the controller's tree, in the shape of httpx's `map_exceptions`.

Each driver states a table of (third-party exception class → our class, message prefix); the first row
whose class matches wins, so the specific rows come first. The original is kept as `__cause__`
(`raise ... from`), except where its text may carry a secret (`chain=False`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from controller.kernel.errors import ControllerError, one_line


@dataclass(frozen=True)
class Rule:
    source: type[BaseException] | tuple[type[BaseException], ...]
    target: type[ControllerError]
    prefix: str = ""  # e.g. "Docker daemon unreachable": said between `what` and the error's own line
    explain: Callable[[BaseException], str] | None = None  # the error's own line; default: its first line


@contextmanager
def map_exceptions(rules: Sequence[Rule], what: str, *, chain: bool = True) -> Iterator[None]:
    try:
        yield
    except ControllerError:
        raise
    except Exception as exc:
        for rule in rules:
            if isinstance(exc, rule.source):
                detail = rule.explain(exc) if rule.explain is not None else one_line(exc)
                message = ": ".join(p for p in (what, rule.prefix, detail) if p)
                if chain:
                    raise rule.target(message) from exc
                raise rule.target(message) from None
        raise
