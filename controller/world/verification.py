"""Post-switch verification, the pure part: the window record, access-log lines, and the verdict.

After a cutover the new color is judged for `spec.verify.windowSeconds` on what Nginx really proxied to it
(the JSON-lines access log of the shipped site, docs/nginx.md) and on its health check. The window is kept in
the state dir (`apps/<app>/verify.json`) after every read, so a kill -9 resumes it where it stopped.

No I/O here: `controller/app/steps/verify.py` runs the window, `controller/drivers/accesslog.py` reads the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from annotated_types import Interval

from controller.kernel.document import Alias, Count, Document, Epoch, Stored
from controller.kernel.elapsed import Elapsed
from controller.kernel.errors import one_line
from controller.spec.base import COLORS, Color

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import VerifySpec

State = Literal["open", "passed", "failed", "abandoned"]
STATES: tuple[State, ...] = ("open", "passed", "failed", "abandoned")
FAILED_REASON = "VerificationFailed"  # the failure-memory reason of a revision switched back from
MAX_LINE = 16 * 1024  # longer lines are not ours (the shipped format writes a few hundred bytes)


@dataclass(frozen=True)
class Counts(Stored):
    """What the window has seen of the new color so far (persisted: a resumed window goes on counting)."""

    requests: Count = 0
    errors: Count = 0  # 5xx answered by the color (or by Nginx for it: 502/504 when it failed)
    slow: Count = 0  # slower than maxLatencyP99Ms
    health_failures: Annotated[Count, Alias("healthFailures")] = 0  # consecutive failed probes
    probes: Count = 0
    skipped: Count = 0  # lines that are not ours: not JSON, other fields, other upstreams

    def add(self, other: Counts) -> Counts:
        return replace(
            self,
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            slow=self.slow + other.slow,
            skipped=self.skipped + other.skipped,
        )


@dataclass(frozen=True)
class LogPos(Stored):
    """Where the access log was last read (controller/drivers/accesslog.py)."""

    inode: Count  # 0: the log did not exist
    offset: Count


@dataclass(frozen=True)
class Window(Stored):
    """apps/<app>/verify.json: one cutover's verification, from the switch until its verdict."""

    color: Color  # the new color, judged
    revision: str
    from_color: Annotated[Color, Alias("fromColor")]  # served before the switch: where traffic goes back to
    # the revision it ran then (None: not ours / unknown, no switch-back)
    from_revision: Annotated[str | None, Alias("fromRevision")]
    generation: str
    started_at: Annotated[Epoch, Alias("startedAt")]  # wall clock, shown; the window's time is `elapsed`
    deadline: Epoch  # wall clock, shown (started_at + windowSeconds)
    log: LogPos = LogPos(0, 0)  # the access log when last read
    counts: Counts = field(default_factory=Counts)
    state: State = "open"
    figures: str = ""  # the measured figures behind the verdict
    # failed windows of this revision before this one (its backoff keeps growing)
    prior_failures: Annotated[int, Alias("priorFailures"), Interval(ge=0, le=1_000_000)] = 0
    # the window's time judged so far, on the monotonic clock (None in files written before it: the wall clock's)
    elapsed: Elapsed | None = None
    # True from the note before the switch until its confirmation: a window a kill left so counts from its resumption
    # (the time before the switch, a deploy's, is no traffic of the new color)
    pending: bool | None = None

    OMIT_NONE = frozenset({"elapsed", "pending"})

    @property
    def open(self) -> bool:
        return self.state == "open"

    def judged(self, length: float, now: float, mono: float, boot: str | None = None) -> Elapsed:
        """The window's time counted up to monotonic reading `mono` (`length`: windowSeconds; `now`: the wall clock,
        for a window written without `elapsed` only)."""
        if self.pending:
            return Elapsed(0.0, mono, boot)
        if self.elapsed is None:
            return Elapsed.since_wall(self.started_at, now, mono, length, boot)
        return self.elapsed.at(mono, boot)


WINDOW = Document(Window)  # verify.json


def window_closed(window: Window | None) -> bool:
    """No verification window is open: the previous color may be stopped (standby: stop) or pruned."""
    return window is None or not window.open


@dataclass(frozen=True)
class Entry:
    """One proxied request as the shipped log_format writes it; each upstream tried is one (addr, status, ms)."""

    time: float  # epoch seconds ($msec)
    tries: tuple[tuple[str, int | None, float | None], ...]


def parse_line(line: bytes) -> Entry | None:
    """One access-log line, or None when it is not one of ours (foreign format, torn, hostile, too long)."""
    if len(line) > MAX_LINE:
        return None
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict) or raw.get("maintenance") == "1":
        return None  # the site's own maintenance answer (nginx/): no color served it
    t, addrs, statuses, times = raw.get("msec"), raw.get("upstream_addr"), raw.get("upstream_status"), raw.get("upstream_response_time")
    if isinstance(t, str):
        try:
            t = float(t)
        except ValueError:
            return None
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
        return None
    if not isinstance(addrs, str) or not isinstance(statuses, str) or not isinstance(times, str) or not addrs:
        return None
    # With a retry Nginx lists every upstream tried, "a:1, b:2"; a group change is " : ". Same order in each field.
    a_list = _split(addrs)
    s_list = _split(statuses)
    r_list = _split(times)
    tries = []
    for i, addr in enumerate(a_list):
        status = _int(s_list[i]) if i < len(s_list) else None
        ms = _ms(r_list[i]) if i < len(r_list) else None
        tries.append((addr, status, ms))
    return Entry(float(t), tuple(tries))


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.replace(" : ", ", ").split(",")]


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) == 3 else None


def _ms(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v * 1000.0 if math.isfinite(v) and v >= 0 else None


def tally(lines: list[bytes], address: str, spec: VerifySpec) -> Counts:
    """Counts for the color at upstream `address` ("127.0.0.1:18082") from `lines`, read past the offset noted at
    the switch: what Nginx logged after it. Never by the time a line carries: Nginx's clock is not ours."""
    requests = errors = slow = skipped = 0
    for line in lines:
        e = parse_line(line)
        if e is None:
            skipped += 1
            continue
        mine = [(s, ms) for a, s, ms in e.tries if a == address]
        if not mine:
            skipped += 1  # another app's, or the other color's
            continue
        for status, ms in mine:
            requests += 1
            # No status: Nginx gave up on it (a timeout or a refused connection it logged as "-"): a failure too.
            if status is None or status >= 500:
                errors += 1
            if spec.maxLatencyP99Ms is not None and ms is not None and ms > spec.maxLatencyP99Ms:
                slow += 1
    return Counts(requests=requests, errors=errors, slow=slow, skipped=skipped)


@dataclass(frozen=True)
class PromAnswer:
    """verify.prometheus: the one number an instant query answered, or None and why not (detail)."""

    value: float | None
    detail: str  # e.g. "5", "no sample (empty vector)", "HTTP 400: query failed: bad_data: ...", "connection refused"


def render_query(query: str, app: str, color: str, revision: str) -> str:
    """verify.prometheus.query with its placeholders replaced (literally: PromQL's own braces stay as written)."""
    return query.replace("{app}", app).replace("{color}", color).replace("{revision}", revision)


def prom_answer(doc: Any) -> PromAnswer:
    """The one number in a Prometheus /api/v1/query answer (decoded JSON), or None and why it is not one number."""
    if not isinstance(doc, dict):
        return PromAnswer(None, "not a Prometheus answer")
    if doc.get("status") != "success":
        kind, error = doc.get("errorType"), doc.get("error")
        why = ": ".join(str(x) for x in (kind, error) if isinstance(x, str) and x) or "status is not success"
        return PromAnswer(None, f"query failed: {why[:200]}")
    data = doc.get("data")
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    sample: Any = None
    if kind == "scalar":
        sample = result
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return PromAnswer(None, "no sample (empty vector)")
        if len(result) > 1:
            return PromAnswer(None, f"{len(result)} samples, not one number")
        sample = result[0].get("value") if isinstance(result[0], dict) else None
    else:
        return PromAnswer(None, f"result type {str(kind)[:20]!r}, not one number")
    if not isinstance(sample, list) or len(sample) != 2 or not isinstance(sample[1], str):
        return PromAnswer(None, "malformed sample")
    try:
        value = float(sample[1][:64])
    except ValueError:
        return PromAnswer(None, "malformed sample")
    if math.isnan(value):
        return PromAnswer(None, "NaN, not a number")
    return PromAnswer(value, f"{value:g}")


@dataclass(frozen=True)
class Verdict:
    state: State  # open: keep watching
    figures: str


def figures(spec: VerifySpec, c: Counts, prom: PromAnswer | None = None) -> str:
    rate = c.errors / c.requests if c.requests else 0.0
    text = f"{c.errors} of {c.requests} requests 5xx (error rate {rate:.3f}, max {spec.maxErrorRate:g})"
    if spec.maxLatencyP99Ms is not None:
        text += f", {c.slow} slower than {spec.maxLatencyP99Ms:g} ms"
    text += f", {c.health_failures} consecutive failed health probes (max {spec.healthFailures})"
    if spec.prometheus is not None:
        if prom is None:
            text += ", prometheus not asked yet"
        elif prom.value is None:
            text += f", prometheus not judged ({one_line(prom.detail)[:200]})"
        else:
            text += f", prometheus {prom.value:g} (max {spec.prometheus.max:g})"
    return text


def judge(spec: VerifySpec, c: Counts, elapsed: float, length: float, prom: PromAnswer | None = None) -> Verdict:
    """Failed as soon as a threshold is crossed; passed when the window (`length` seconds, `elapsed` of them
    judged) ends without one; else open.

    `prom` is the last verify.prometheus answer. One that is not a number (the query failed, Prometheus is down)
    does not fail the window by itself: monitoring being away must not take a healthy release off the air."""
    shown = figures(spec, c, prom)
    if c.health_failures >= spec.healthFailures:
        return Verdict("failed", f"health check failed {c.health_failures}x in a row; {shown}")
    pm = spec.prometheus
    if pm is not None and prom is not None and prom.value is not None and prom.value > pm.max:
        return Verdict("failed", f"prometheus query above max ({prom.value:g} > {pm.max:g}): {shown}")
    if c.requests >= spec.minRequests:
        if c.errors / c.requests > spec.maxErrorRate:
            return Verdict("failed", f"error rate above maxErrorRate: {shown}")
        # p99 above the limit exactly when more than 1% of the requests are slower than it.
        if spec.maxLatencyP99Ms is not None and c.slow / c.requests > 0.01:
            return Verdict("failed", f"p99 latency above {spec.maxLatencyP99Ms:g} ms: {shown}")
    if elapsed >= length:
        judged = "" if c.requests >= spec.minRequests else f" (error rate not judged: fewer than minRequests {spec.minRequests})"
        return Verdict("passed", shown + judged)
    return Verdict("open", shown)


def hold_message(want: Color, serving: Color | None, revision: str, failure_message: str, retry_in: float) -> str:
    """What --plan and --status say while a revision that failed verification is held off."""
    where = f"Nginx serves {serving}" if serving in COLORS else "Nginx serves no known color"
    return (
        f"spec wants {want}, {where} because verification of revision {revision} failed ({failure_message}); "
        f"next try in {int(max(0.0, retry_in))}s, or at once when the spec changes"
    )
