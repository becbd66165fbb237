"""The one way a plan is made: `decide(inputs)` composes the rules of `controller/rules/` over what
`controller/app/gather.py` gathered. Pure: no I/O, no clock, no state dir; the same inputs make the same plan.

Each rule returns a fragment (its actions, blockers, diffs, or a transformation as a returned value); only this
module puts them together, in this order (earlier rules take precedence):

1. secrets: the revision the desired color is held to while it serves (rules/secrets.py)
2. foreign containers, never touched (rules/foreign.py)
3. failover: what the rule says for this observation (rules/failover.py)
4. switch-back: a revision that failed its verification is held off (rules/switchback.py)
5. the desired color's steps (rules/desired.py); the capacity of a new color (rules/capacity.py); a failed
   gate's backoff, and another revision's beforeSwitch hook still running (rules/gates.py)
6. failover steers traffic (rules/failover.py); the route and the marker (rules/route.py); the idle color
   (rules/standby.py)
7. deploy gates around the switch, hooks past their timeout stopped first (rules/gates.py); the preview on the
   idle color (rules/preview.py)
8. maintenance: spec.maintenance, a wrapped migration around the gates and the switch placed in 7, else off first
   (rules/maintenance.py)
9. `dependsOn` holds a new color back (rules/depends_on.py)
10. a marker that disagrees with what Nginx serves, corrected before all of the above (rules/route.py)
11. pruning, for a converged plan whose image facts (and the release ledger) were gathered (rules/pruning.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controller.app.failover import Decision
from controller.app.plan import Plan
from controller.app.rules.capacity import capacity_blocker, skipped
from controller.app.rules.depends_on import depends_on
from controller.app.rules.desired import Desired, desired
from controller.app.rules.failover import failover, steer
from controller.app.rules.foreign import Foreign, foreign
from controller.app.rules.gates import gate_backoff, gates, hook_busy
from controller.app.rules.maintenance import plan_maintenance
from controller.app.rules.preview import plan_preview
from controller.app.rules.pruning import plan_pruning
from controller.app.rules.route import route
from controller.app.rules.secrets import hold_live_secrets
from controller.app.rules.standby import standby
from controller.app.rules.switchback import Hold, hold
from controller.kernel.backoff import DEFAULT_POLICY, BackoffPolicy
from controller.spec.base import COLORS, Color, other
from controller.store.documents import FailedOver, FailoverState
from controller.store.releases import Releases
from controller.world.actions import CreatePreview, StartPreview, SwitchRoute
from controller.world.facts import ImagesObserved, Memory, Observed
from controller.world.verification import window_closed

if TYPE_CHECKING:  # the models load with the first spec validated (none on a spec-cache hit)
    from controller.spec.app import BlueGreenApp


@dataclass(frozen=True)
class PassInputs:
    """Everything `decide` reads: facts gathered once per pass, nothing derived from them."""

    app: BlueGreenApp
    observed: Observed
    memory: Memory
    failover: FailoverState  # tracked for `observed`
    failover_changed: bool  # differs from failover.json: the caller saves it (modes that write)
    now: float
    revision_extra: dict[str, str] = field(default_factory=dict)  # deploy-time revision inputs (secrets fingerprint)
    not_ready: dict[str, str] = field(default_factory=dict)  # dependsOn: accessory -> why it is not ready
    images: ImagesObserved | None = None  # for pruning; None: not gathered (nothing is pruned)
    policy: BackoffPolicy = DEFAULT_POLICY  # when a failed revision is tried again (--backoff-base, --backoff-max)
    releases: Releases | None = None  # for pruning, with `images`: the release ledger, the images just seen noted
    # A failover this observation found done (its switch announced, traffic on its color): the caller that saves
    # `failover` records it, once (history, metric).
    failed_over: FailedOver | None = None
    mono: float | None = None  # the monotonic clock at `now` (World.monotonic); None: hand-built inputs, `now` stands in
    boot: str | None = None  # the boot `mono` is of (World.boot_id); None: unknown

    @property
    def monotonic(self) -> float:
        return self.mono if self.mono is not None else self.now

    @property
    def verification_open(self) -> bool:
        """A post-switch verification window is open: its rollback target stays (nothing is pruned meanwhile)."""
        return not window_closed(self.memory.verify)


@dataclass(frozen=True)
class _Core:
    """What the desired color's rules say, before anything is composed around them."""

    extra: dict[str, str]
    secrets_stale: str | None
    revisions: dict[Color, str]
    foreign: Foreign
    failover: Decision
    held: Hold | None
    desired: Desired


def _core(i: PassInputs) -> _Core:
    app, obs, mem, now = i.app, i.observed, i.memory, i.now
    want = app.spec.activeColor
    extra, stale = hold_live_secrets(app, obs.containers[want], obs.serving, i.revision_extra)
    revisions = {c: app.revision(c, extra) for c in COLORS}
    rev = revisions[want]
    fo = failover(app, obs, mem, i.failover, now, i.monotonic, i.boot)
    fr = foreign(app, obs)
    held = hold(app, obs, mem, now, rev, obs.serving, i.policy)
    return _Core(extra, stale, revisions, fr, fo, held, desired(app, obs, mem, now, rev, fo, fr.colors, held, i.policy))


def needs_capacity(i: PassInputs) -> bool:
    """Whether the plan for `i` starts a color that does not serve (a deploy's, a preview's), so that `gather` reads
    the host's figures for the capacity rule first. A pass that starts nothing asks the host nothing more."""
    if skipped(i.app) or i.observed.capacity is not None:
        return False
    if _core(i).desired.starts:
        return True
    # A preview starts the idle color only once the rest of the plan leaves traffic on the desired color: that is
    # the whole plan's to say (pure, so asking it costs no I/O; apps with a preview only).
    return i.app.spec.preview is not None and any(isinstance(a, (CreatePreview, StartPreview)) for a in decide(i).actions)


def decide(i: PassInputs) -> Plan:
    app, obs, mem, now = i.app, i.observed, i.memory, i.now
    want = app.spec.activeColor
    idle = other(want)
    serving = obs.serving
    c = _core(i)
    rev = c.revisions[want]
    d = c.desired

    # The capacity of a new color: short, nothing starts.
    short = capacity_blocker(app, obs.capacity, want, serving, obs.containers[serving] if serving else None) if d.starts else None
    actions = () if short is not None else d.actions
    blockers = (*c.foreign.blockers, *d.blockers, *((short,) if short is not None else ()))
    will_be_ready = d.will_be_ready and short is None
    # Deploy gates: a healthy new color whose checks or hook failed backs off before it is tried again.
    gated = gate_backoff(app, mem, rev, now, i.policy) if d.ready and serving != want and want not in c.foreign.colors else None
    if gated is not None:
        blockers = (*blockers, gated)
        will_be_ready = False
    # One migration at a time: no switch (and so no hook of its own) while another revision's beforeSwitch hook runs.
    busy = hook_busy(app, obs, mem, rev, now) if will_be_ready and serving != want and want not in c.foreign.colors else None
    if busy is not None:
        blockers = (*blockers, busy)
        will_be_ready = False

    # Where traffic goes: the desired color once it is (or will have been proven) healthy; else stay put.
    target: Color | None = want if will_be_ready else serving
    if c.held is not None:
        target = c.held.target
        actions = (*actions, *c.held.proof)  # the way back proven steady first (rule 1)
    s = steer(app, obs, c.failover, target, now, actions, blockers)
    r = route(app, obs, None if s.target in c.foreign.colors else s.target)  # never onto a container not ours
    sb = standby(app, obs, mem, r.target, rev, c.foreign.colors)
    actions = (*s.actions, *r.then, *((sb.stop,) if sb.stop is not None else ()))
    blockers = (*s.blockers, *r.blockers)
    diffs = (*d.diffs, *s.diffs, *r.diffs, *((sb.diff,) if sb.diff is not None else ()))

    # Deploy gates (spec.hooks, spec.checks) between healthy and the switch, and after it.
    switch_at = next((n for n, a in enumerate(actions) if isinstance(a, SwitchRoute) and a.color == want), None)
    g = gates(app, obs, mem, rev, switching=switch_at is not None, now=now)
    if switch_at is not None:
        actions = (*actions[:switch_at], *g.before_switch, *actions[switch_at:])
    actions = (*g.first, *actions, *g.after)

    # spec.preview on the idle color: the flag off first, its steps after the live color's.
    pv = plan_preview(app, obs, mem, now, c.extra, target=r.target, foreign=c.foreign.colors, policy=i.policy)
    actions = (*pv.before, *actions, *pv.after)
    diffs = (*diffs, *pv.diffs)
    revisions = dict(c.revisions)
    if pv.revision is not None:
        revisions[idle] = pv.revision  # the idle color's wanted revision (and failure memory key) is the preview's

    # Maintenance: spec.maintenance; a wrapped migration's flag around its gates and switch (placed above); else off first.
    mt = plan_maintenance(app, obs, actions)
    actions, diffs = mt.actions, (*diffs, *mt.diffs)

    # dependsOn: a new color waits for its accessories; the live color is never held back.
    held = depends_on(actions, serving, i.not_ready)
    if held is not None:
        actions, blockers = held.actions, (*blockers, held.blocker)

    # A marker that disagrees with what Nginx serves now: corrected before every other step, which may fail, and
    # never held back (safety rule 3; rules/route.py).
    actions = (*r.first, *actions)

    converged = not actions and not blockers
    return Plan(
        app=app.name,
        generation=app.generation(),
        revisions=revisions,
        serving=serving,
        target=r.target,
        actions=actions,
        blockers=blockers,
        diffs=diffs,
        revision_extra=c.extra,
        secrets_stale=c.secrets_stale,
        failover=c.failover,
        preview=pv.state,
        maintenance=mt.state,
        prune=(
            plan_pruning(app, obs, i.images, i.releases, verification_open=i.verification_open)
            if converged and i.images is not None and i.releases is not None
            else ()
        ),
    )
