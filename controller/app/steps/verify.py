"""Post-switch verification, the running part: open a window at a cutover and judge it to its verdict.

`note_switch` (before the plan that switches runs) notes the access log's end: what Nginx logs after it for
the new color is the new color's. `switched` starts the clock once the switch is confirmed. `run` reads the log
through the World (`read_access_log`: the in-memory world feeds it traffic) and probes the new color's health
until a threshold is crossed or the window ends, saving the window after every read (state dir: a kill -9
resumes it). A failed window is remembered as a failed revision (reason VerificationFailed, with the figures)
in the failure memory; the switch-back rule (rules/switchback.py) then routes back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from controller.app.apply import ApplyResult
from controller.app.plan import Plan
from controller.app.routing import health_url, upstream_address
from controller.kernel.elapsed import Elapsed
from controller.kernel.errors import HostError, one_line
from controller.spec.base import other
from controller.store.documents import LastDeploy, iso
from controller.store.metrics import Metrics
from controller.store.state import HistoryEntry, Ledger, StateStore
from controller.world.actions import SwitchRoute
from controller.world.facts import Failure, Memory, Observed
from controller.world.protocol import LogPos, PromAnswer, World
from controller.world.verification import FAILED_REASON, Window, judge, render_query, tally

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp

PROGRESS_EVERY = 5.0  # seconds between two progress lines of a window
PROM_EVERY = 5.0  # seconds between two verify.prometheus queries (a scrape interval is 15 s by default)
PROM_TIMEOUT = 5.0  # seconds one query may take, whatever the server does


class Verifier:
    def __init__(self, world: World, store: StateStore, metrics: Metrics, ledger: Ledger) -> None:
        self.world = world
        self.store = store
        self.metrics = metrics
        self.ledger = ledger

    def note_switch(self, app: BlueGreenApp, p: Plan, obs: Observed, mem: Memory) -> None:
        """Before `p` runs: if it switches traffic to the desired color, open a window at the log's end now
        (`mem`: the pass's memory, for the revision's earlier failed windows)."""
        v, want = app.spec.verify, app.spec.activeColor
        if v is None or p.target != want or p.serving == want:
            return
        if not any(isinstance(a, SwitchRoute) and a.color == want for a in p.actions):
            return
        frm = p.serving or other(want)
        prev = obs.containers[frm]
        prior = mem.failures.get(p.revisions[want])
        try:
            pos = self.world.access_log_end(app.access_log)
        except HostError:
            pos = LogPos(0, 0)  # judged on health alone; `run` says why
        now = self.world.now()
        self.store.save_window(
            app.name,
            Window(
                color=want,
                revision=p.revisions[want],
                from_color=frm,
                # Only a container of ours, with a revision, is a color to switch back to.
                from_revision=prev.revision if prev is not None and prev.ours(app.name) and p.serving is not None else None,
                generation=p.generation,
                started_at=now,
                deadline=now + v.windowSeconds,
                log=pos,
                prior_failures=prior.count if prior is not None and prior.reason == FAILED_REASON else 0,
                elapsed=Elapsed(0.0, self.world.monotonic(), self.world.boot_id()),
                pending=True,
            ),
        )

    def switched(self, app: BlueGreenApp, outcome: ApplyResult) -> None:
        """The switch to the window's color is confirmed: the window's time runs from now."""
        v = app.spec.verify
        w = self.store.load_window(app.name)
        if v is None or w is None or not w.open:
            return
        if any(o.ok and isinstance(o.action, SwitchRoute) and o.action.color == w.color for o in outcome.outcomes):
            now = self.world.now()
            restart = Elapsed(0.0, self.world.monotonic(), self.world.boot_id())
            self.store.save_window(app.name, replace(w, started_at=now, deadline=now + v.windowSeconds, elapsed=restart, pending=None))

    def run(self, app: BlueGreenApp, p: Plan, obs: Observed, log: Any, rid: str, should_stop: Any) -> Window | None:
        """Judge the open window to its verdict; the closed window, or None (none open, or stopped: it resumes)."""
        w = self.store.load_window(app.name)
        if w is None or not w.open:
            return None
        v, want = app.spec.verify, app.spec.activeColor
        if v is None or w.color != want or w.revision != p.revisions[want] or (obs.route.reachable and obs.route.color != w.color):
            # The spec or the route moved on (a new deploy, a rollback by hand, a switch that never happened).
            return self._close(app, w, "abandoned", "the window's color no longer serves the spec's revision", rid, log)
        hc = app.spec.healthCheck
        address = upstream_address(app, w.color)
        url = health_url(app, w.color)
        pause = min(hc.intervalSeconds, 0.5)
        note = ""
        last_progress = self.world.monotonic()
        pm = v.prometheus
        prom: PromAnswer | None = None  # its last answer, asked at prom_at
        prom_at: float | None = None
        prom_query = render_query(pm.query, app.name, w.color, w.revision) if pm is not None else ""
        length = v.windowSeconds
        boot = self.world.boot_id()
        w = replace(w, elapsed=w.judged(length, self.world.now(), self.world.monotonic(), boot), pending=None)  # it serves: counting
        log.info("verify.start", color=w.color, revision=w.revision, left=round(max(0.0, length - _seconds(w)), 1))
        while True:
            try:
                read = self.world.read_access_log(app.access_log, w.log)
                note = read.note
                counts = w.counts.add(tally(read.lines, address, v))
                w = replace(w, log=read.pos, counts=counts)
            except HostError as e:
                note = one_line(str(e))  # judged on health alone
            probe = self.world.probe_health(url, hc.expectStatus, hc.requestTimeoutSeconds)
            c = w.counts
            w = replace(w, counts=replace(c, probes=c.probes + 1, health_failures=0 if probe.ok else c.health_failures + 1))
            if pm is not None and (prom_at is None or self.world.monotonic() - prom_at >= PROM_EVERY):
                prom_at = self.world.monotonic()
                prom = self.world.query_prometheus(pm.url, prom_query, PROM_TIMEOUT)
            w = replace(w, elapsed=w.judged(length, self.world.now(), self.world.monotonic(), boot))
            left = length - _seconds(w)
            verdict = judge(v, w.counts, _seconds(w), length, prom)
            w = replace(w, figures=verdict.figures + (f"; access log: {note}" if note else ""))
            if verdict.state != "open":
                return self._close(app, w, verdict.state, w.figures, rid, log)
            self.store.save_window(app.name, w)
            if should_stop():
                log.info("verify.interrupted", left=round(left, 1))
                return None
            if self.world.monotonic() - last_progress >= PROGRESS_EVERY:
                log.info("verify.progress", color=w.color, left=round(left, 1), figures=w.figures)
                last_progress = self.world.monotonic()
            self.world.sleep(max(0.05, min(pause, left)))

    def _close(self, app: BlueGreenApp, w: Window, state: str, figures: str, rid: str, log: Any) -> Window:
        closed = replace(w, state=state, figures=figures)  # type: ignore[arg-type]  # one of verify.STATES
        now = self.world.now()
        if state == "failed":
            # Remembered before the window is closed: a crash in between judges the window again, never loses it.
            mem = self.store.load_memory(app.name)
            # Counted from the windows this revision failed (a switch-back is no health check failure).
            failure = Failure(w.revision, w.color, w.prior_failures + 1, now, FAILED_REASON, figures)
            last = LastDeploy(
                at=iso(now),
                reconcile_id=rid,
                from_color=w.from_color,
                color=w.color,
                image=app.spec.image,
                revision=w.revision,
                outcome="failed",
                message=f"verification failed: {figures}",
            )
            self.store.save_memory(app.name, replace(mem, failures={**mem.failures, w.revision: failure}), last)
        self.store.save_window(app.name, closed)
        self.metrics.verifications.labels(app=app.name, result=state).inc()
        outcome = {"passed": "ok", "failed": "failed"}.get(state, state)
        self.ledger.record(HistoryEntry(iso(now), app.name, rid, "Verify", w.color, app.spec.image, outcome, figures))
        (log.warning if state == "failed" else log.info)("verify.done", result=state, color=w.color, figures=figures)
        return closed


def _seconds(w: Window) -> float:
    """The window's time judged so far (`run` has counted it)."""
    assert w.elapsed is not None
    return w.elapsed.seconds
