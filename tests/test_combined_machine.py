"""The combined property machine of issue 19: every feature at once, on the in-memory world.

One hypothesis state machine over verify (with switch-back, fed by the access log the fake Nginx writes),
failover, preview, deploy gates (a beforeSwitch hook that prints its environment, a check), an accessory that
the app `dependsOn`, capacity, pruning (`keepImages`) and secrets (a long JWT-like value and a multi-line PEM
key); with kill -9 before any World call, SIGTERM mid-pass, Docker restarts of either color or the accessory
(also scheduled to happen *during* a pass: mid-window, mid-hook), wall-clock steps both ways (the fake keeps
real time apart: containers, hooks and traffic run on it; `now()` and Docker's timestamps are wall time), and
spec edits between any two of those (mid-window, mid-hook).

Invariants, checked after every step (and at the World call where a rule can be broken):
- traffic moves only onto a color that is healthy and ran `stableSeconds` of real time without a restart;
- never onto a revision remembered as failed (verification failed, failed deploy) but the spec's own retry;
- the switch-back target is never stopped or removed while its verification window is open;
- at most one beforeSwitch hook of the app runs at a time;
- no 16-character fragment of a secret in any state file or log line (structlog, redacted as configured);
- no volume removed, and the accessory's data is still where its container reads it;
- the marker names what Nginx serves, and preview requests reach only a running, healthy preview (after a
  complete pass);
- traffic moved off the desired color is explained by the state dir (an active failover or a held revision);
- a window neither passes a release whose every request failed nor wedges a pass; `rollback` accepts only a
  warm standby.

Defects of issue 19 not fixed yet are listed in KNOWN_DEFECTS: a violation tagged with one of them ends the
checks of that example (CI stays green) and is counted as a hypothesis event. The lead removes an entry when its
fix lands. Local runs: BLUEGREEN_MACHINE_EXAMPLES=<n> for more examples, BLUEGREEN_MACHINE_HUNT=<defect> to make
that one defect fail (and shrink), BLUEGREEN_MACHINE_HUNT=all to make every defect fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, MutableMapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pydantic
import pytest
import structlog
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from controller.accessory.reconcile import AccessoryRunner
from controller.app.gather import gather
from controller.app.reconcile import Reconciler
from controller.app.routing import upstream_address
from controller.cli import release
from controller.kernel import logs
from controller.spec.accessory import Accessory
from controller.spec.app import BlueGreenApp, SsmSecrets
from controller.spec.base import other
from controller.store.metrics import Metrics
from controller.store.state import StateStore
from controller.world.facts import LABEL_HOOK, is_anonymous, port_of
from controller.world.fake import Crash, FakeImage
from controller.world.protocol import HookState, RunState, World
from controller.world.secrets import SecretRef, SecretsResolver
from controller.world.verification import FAILED_REASON
from tests.factories import make_app
from tests.fakes import CheckedWorld

# Issue 19's defects not fixed on main yet (number -> what the machine sees). Remove an entry when its fix lands.
# Found by this machine, not in issue 19's table, and fixed: 13 (the marker written before the switch), 14 (a
# wall-clock step forward made a color started by hand look steady: StartedAt is wall time; now the process's
# age on the boot clock must say so too; tests/test_failover_planner.py has the example).
KNOWN_DEFECTS: dict[int, str] = {}
ISSUE_19 = frozenset(range(1, 15))  # 13, 14: the machine's own findings (below)
_hunt = os.environ.get("BLUEGREEN_MACHINE_HUNT", "")
if _hunt:
    # Make the named defect(s) fail; the others still end an example quietly, so the shrink aims at one defect.
    _hunted = ISSUE_19 if _hunt == "all" else {int(n) for n in _hunt.split(",")}
    KNOWN_DEFECTS = {n: why for n, why in KNOWN_DEFECTS.items() if n not in _hunted}

APP = "dialogue"
ACCESSORY = "redis"
NAMED_VOLUME = "redis-data"
STABLE = 2.0  # healthCheck.stableSeconds (the default)
RATE = 4.0  # requests per second the fake Nginx serves (and logs)
MAX_LINES = 40  # logged per time step at most (a long wait is not ten thousand lines)
PASS_LIMIT = 300.0  # real seconds one run may take: health timeouts, hooks and a window fit twice over
BACKOFF_BASE = 60.0

# Secrets of the app (SSM): a long single-line token and a multi-line key, deterministic, random-looking.
def _secret_text(seed: str, n: int) -> str:
    out = b""
    while len(out) * 4 // 3 < n:
        out += hashlib.sha256(seed.encode() + len(out).to_bytes(4, "big")).digest()
    return base64.urlsafe_b64encode(out).decode()[:n]


JWT = "eyJ" + _secret_text("jwt", 800)
PEM = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(_secret_text(f"pem{i}", 64) for i in range(12)) + "\n-----END PRIVATE KEY-----"
SECRETS = {"API_TOKEN": JWT, "TLS_KEY": PEM}
FRAGMENT = 16
_FRAGMENTS = frozenset(line[i : i + FRAGMENT] for v in SECRETS.values() for line in v.split("\n") for i in range(len(line) - FRAGMENT + 1))

PING = ("redis-cli", "ping")
IMAGES = {
    "dialogue:1": FakeImage(created=1.0),
    "dialogue:2": FakeImage(created=2.0),
    "dialogue:3": FakeImage(created=3.0),
    "dialogue:5xx": FakeImage(created=4.0),  # healthy, but every request it serves fails (verification's prey)
    "dialogue:loop": FakeImage("crashloop", 1.5, created=5.0),
    "dialogue:bad": FakeImage("never", created=6.0),
    # The accessory: like the real redis image, it declares VOLUME /data (kept across a recreate: issue 19 #7).
    "redis:7.2": FakeImage(execs={PING: (0, "PONG")}, volumes=("/data",)),
    "redis:7.4": FakeImage(execs={PING: (0, "PONG")}, volumes=("/data",)),
}
FAILING_TRAFFIC = {"dialogue:5xx"}
VERIFY: dict[str, dict[str, Any]] = {
    "strict": {"windowSeconds": 10, "minRequests": 5, "maxErrorRate": 0.2},
    "lax": {"windowSeconds": 20, "minRequests": 1000, "maxErrorRate": 0.9},
}
HOOKS: dict[str, dict[str, Any]] = {
    "migrate": {"beforeSwitch": {"command": ["migrate"], "timeoutSeconds": 60}},
    "hung": {"beforeSwitch": {"command": ["migrate", "--slow"], "timeoutSeconds": 5}},
    "failing": {"beforeSwitch": {"command": ["migrate", "--fail"], "timeoutSeconds": 60}, "afterSwitch": {"command": ["notify"]}},
}


class Wedged(BaseException):
    """A run took longer than PASS_LIMIT of real time: it is stopped (like an operator's kill) and reported."""


@dataclass
class Budget:
    """kill -9 before the `left`-th World call of a run (None: no kill), or right after traffic moved."""

    left: int | None = None
    after_switch: bool = False

    def tick(self) -> None:
        if self.left is not None:
            if self.left <= 0:
                raise Crash("kill -9")
            self.left -= 1


_WORLD_CALLS = frozenset(n for n in dir(World) if not n.startswith("_"))


class Killable:
    """The world as one run of the controller sees it: every World call may be the one a kill -9 comes before."""

    def __init__(self, target: object, budget: Budget) -> None:
        self._target = target
        self._budget = budget

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in _WORLD_CALLS or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._budget.tick()
            return attr(*args, **kwargs)

        return call


@dataclass(frozen=True)
class Violation:
    defect: int | None  # the issue-19 defect it shows (None: a new finding)
    text: str


@dataclass
class Failed:
    """The machine's own record of a revision the controller held as failed (it must not forget it)."""

    reason: str
    at: float  # wall time
    generation: str


@dataclass
class MachineWorld(CheckedWorld):
    """CheckedWorld + real time apart from wall time, an access log fed by the traffic Nginx serves, events that
    happen during a run, and the checks that must hold at the very call that could break them."""

    offset: float = 0.0  # wall - real
    stepped_forward: bool = False
    wall_at: dict[float, float] = field(default_factory=dict)  # a start instant (real) -> Docker's StartedAt (wall)
    served: list[tuple[float, str, int]] = field(default_factory=list)  # (real time, upstream, status)
    carry: float = 0.0
    route_changes: list[tuple[float, str | None, str]] = field(default_factory=list)  # (real time, color now served, spec generation)
    events: list[tuple[float, Callable[[], None]]] = field(default_factory=list)
    fired: bool = False
    stop_at: float | None = None
    run_started: float | None = None
    found: list[Violation] = field(default_factory=list)
    app: BlueGreenApp | None = None
    store: StateStore | None = None
    revision_extra: dict[str, str] = field(default_factory=dict)
    failed: dict[str, Failed] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)

    # Time ----------------------------------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock + self.offset

    def monotonic(self) -> float:
        """Real time, which no clock step moves (for the controller's durations once it reads them so: #10)."""
        return self.clock

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Real time passes: Nginx serves meanwhile, events fire at their instant, a run too long is Wedged."""
        end = self.clock + max(0.0, seconds)
        while True:
            due = sorted((e for e in self.events if e[0] <= end), key=lambda e: e[0])
            until = max(self.clock, due[0][0]) if due else end
            self._serve(until - self.clock)
            self.clock = until
            if not due:
                break
            self.events.remove(due[0])
            self.fired = True
            due[0][1]()
        if self.run_started is not None and self.clock - self.run_started > PASS_LIMIT:
            self.run_started = None
            self.found.append(Violation(10, f"a run went on for more than {PASS_LIMIT:g}s of real time (wall clock stepped by {self.offset:+g}s)"))
            raise Wedged()

    def step_clock(self, delta: float) -> None:
        """The wall clock jumps (NTP, an operator): Docker's StartedAt of what runs stays as it was."""
        for c in self.containers.values():
            if c.started_at is not None:
                self.wall_at.setdefault(c.started_at, c.started_at + self.offset)
        self.offset += delta
        self.stepped_forward |= delta > 0

    def _wall(self, started: float | None) -> float | None:
        return None if started is None else self.wall_at.get(started, started + self.offset)

    def run_state(self, name: str) -> RunState | None:
        rs = super().run_state(name)
        return None if rs is None else replace(rs, started_at=self._wall(rs.started_at))

    def find_hook(self, labels: dict[str, str]) -> HookState | None:
        hs = super().find_hook(labels)
        return None if hs is None else replace(hs, started_at=self._wall(hs.started_at))

    def should_stop(self) -> bool:
        return self.stop_at is not None and self.clock >= self.stop_at

    # Traffic ---------------------------------------------------------------------------------------------------
    def _serve(self, seconds: float) -> None:
        """What Nginx proxies meanwhile (RATE a second, to what it routes now), logged as the shipped site does."""
        want = seconds * RATE + self.carry
        n = int(want)
        self.carry = want - n
        servers = self.routed(APP)
        if not n or not servers:
            return
        lines = []
        for i in range(min(n, MAX_LINES)):
            at = self.clock + seconds * (i + 1) / n
            status = self._answer(servers[0])
            self.served.append((at, servers[0], status))
            lines.append(json.dumps({"msec": f"{at + self.offset:.3f}", "upstream_addr": servers[0],
                                     "upstream_status": str(status), "upstream_response_time": "0.010"}))  # fmt: skip
        if self.app is not None and self.app.spec.verify is not None:
            self.log_access(self.app.access_log, *(line.encode() for line in lines))

    def _answer(self, server: str) -> int:
        port = port_of(server)
        c = next((c for c in self.containers.values() if c.state == "running" and c.fact.host_port == port), None)
        if c is None:
            return 502
        if not self._health_now(c) or c.fact.image in FAILING_TRAFFIC:
            return 500
        return 200

    # Checks at the call ----------------------------------------------------------------------------------------
    def _checked(self, change: Callable[[], None]) -> None:
        before = self.routed(APP)
        seen = len(self.violations)
        super()._checked(change)
        after = self.routed(APP)
        for v in self.violations[seen:]:
            defect = 14 if self.stepped_forward else 2 if self._switching_back() else None
            self.found.append(Violation(defect, v))
        if after == before:
            return
        color = next((c for c in ("blue", "green") if self._on(after, c)), None)
        self.route_changes.append((self.clock, color, self.app.generation() if self.app is not None else ""))
        self._onto_failed(color)
        if self.budget.after_switch:
            self.budget.left = 0  # the next World call is the one the kill comes before

    def _on(self, servers: list[str], color: str) -> bool:
        c = self.containers.get(f"{APP}-{color}")
        return c is not None and any(port_of(s) == c.fact.host_port for s in servers)

    def _switching_back(self) -> bool:
        """Traffic leaves the desired color because its revision failed verification (switchback.py)."""
        if self.store is None or self.app is None:
            return False
        mem = self.store.load_memory(APP)
        f = mem.failures.get(self.app.revision(self.app.spec.activeColor, self.revision_extra))
        return f is not None and f.reason == FAILED_REASON

    def _onto_failed(self, color: str | None) -> None:
        if color is None or self.app is None:
            return
        self.note_failures()
        c = self.containers.get(f"{APP}-{color}")
        rev = c.fact.revision if c is not None else None
        f = self.failed.get(rev or "")
        if f is None or rev is None:
            return
        want = self.app.spec.activeColor
        retry = f.generation != self.app.generation() or self.now() >= f.at + BACKOFF_BASE or f.reason != FAILED_REASON
        if color == want and rev == self.app.revision(want, self.revision_extra) and retry:
            return  # the spec's own revision: a retry after its backoff, or at once after a spec change
        defect = 4 if self.app.spec.failover != "none" and color != want else None
        self.found.append(Violation(defect, f"traffic moved onto {color} running revision {rev}, remembered as failed ({f.reason})"))

    def note_failures(self) -> None:
        """Union the state dir's failed revisions into the machine's record (which forgets nothing by itself)."""
        if self.store is None or self.app is None:
            return
        for rev, f in self.store.load_memory(APP).failures.items():
            self.failed.setdefault(rev, Failed(f.reason, f.last_failed_at, self.app.generation()))

    def _window_target(self, name: str) -> bool:
        """`name` is the switch-back target of a verification window still in force."""
        if self.store is None or self.app is None or self.app.spec.verify is None:
            return False
        w = self.store.load_window(APP)
        if w is None or not w.open or w.from_revision is None or name != f"{APP}-{w.from_color}":
            return False
        return w.color == self.app.spec.activeColor and w.revision == self.app.revision(w.color, self.revision_extra)

    def stop_container(self, name: str, timeout: int) -> None:
        self._guard_window(name, "stopped")
        super().stop_container(name, timeout)

    def remove_container(self, name: str) -> None:
        self._guard_window(name, "removed")
        super().remove_container(name)

    def _guard_window(self, name: str, what: str) -> None:
        if self._window_target(name):
            defect = 3 if self.app is not None and self.app.spec.preview is not None else None
            self.found.append(Violation(defect, f"the switch-back target {name} was {what} while its window is open"))

    def start_container(self, name: str) -> None:
        super().start_container(name)
        c = self.containers.get(name)
        if c is None or c.command is None or c.fact.labels.get(LABEL_HOOK) != "beforeSwitch":
            return
        self._settle()
        running = [n for n, h in self.containers.items() if h.command is not None and h.fact.state == "running"
                   and h.fact.labels.get(LABEL_HOOK) == "beforeSwitch"]  # fmt: skip
        if len(running) > 1:
            self.found.append(Violation(6, f"two beforeSwitch hooks of {APP} run at once: {sorted(running)}"))


class FakeSsm:
    """SSM as drivers/ssm.py answers it: versions every pass; values registered with the redactor when read."""

    def versions(self, cfg: SsmSecrets) -> list[SecretRef]:
        return [SecretRef(env, f"{cfg.path}{env.lower()}", 1, "SecureString") for env in sorted(SECRETS)]

    def values(self, cfg: SsmSecrets, refs: list[SecretRef]) -> dict[str, str]:
        for r in refs:
            logs.register_secret(SECRETS[r.env])
        return {r.env: SECRETS[r.env] for r in refs}


def hook_script(argv: list[str], env: dict[str, str]) -> tuple[int, tuple[str, ...]]:
    """A migration that prints its environment (the worst honest hook), as Docker's log lines."""
    lines = [f"{k}={v}" for k, v in sorted(env.items())]
    return (1 if "--fail" in argv else 0), tuple(ln for text in ["migrating", *lines] for ln in text.split("\n"))


@dataclass(frozen=True)
class Desired:
    """The spec as the machine edits it (the document: `build` makes the validated app)."""

    image: str = "dialogue:1"
    color: str = "blue"
    verify: str | None = None
    failover: bool = False
    preview: str | None = None
    hooks: str | None = None
    depends: bool = False
    standby: str = "keep"
    keep_images: int = 3
    resources: bool = False

    def build(self) -> BlueGreenApp:
        spec: dict[str, Any] = {
            "image": self.image,
            "activeColor": self.color,
            "standby": self.standby,
            "keepImages": self.keep_images,
            "secrets": {"ssm": {"path": "/dialogue/prod/"}},
        }
        if self.verify is not None:
            spec["verify"] = VERIFY[self.verify]
        if self.failover:
            spec |= {"failover": "previous", "failoverAfterSeconds": 2}
        if self.preview is not None:
            spec["preview"] = {"image": self.preview}
        if self.hooks is not None:
            spec["hooks"] = HOOKS[self.hooks]
            spec["checks"] = {"beforeSwitch": [{"http": {"path": "/actuator/health"}}]}
        if self.depends:
            spec["dependsOn"] = [ACCESSORY]
        if self.resources:
            spec["resources"] = {"memory": "1g"}
        return make_app(APP, **spec)


def accessory(image: str, named: bool) -> Accessory:
    spec: dict[str, Any] = {
        "image": image,
        "update": "recreate",
        "healthCheck": {"command": list(PING), "timeoutSeconds": 1, "intervalSeconds": 0.5},
    }
    if named:
        spec["volumes"] = {NAMED_VOLUME: "/data"}
    return Accessory.model_validate({"apiVersion": "bluegreen/v1", "kind": "Accessory", "metadata": {"name": ACCESSORY}, "spec": spec})


class CombinedMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._stack = ExitStack()
        self.logs: list[MutableMapping[str, Any]] = self._stack.enter_context(structlog.testing.capture_logs(processors=[logs.redact_secrets]))
        # In memory where the host has it: the state dir fsyncs every write, and a window saves itself twice a second.
        self.tmp = Path(tempfile.mkdtemp(prefix="bg-machine-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        self.state_dir = self.tmp / "state"
        self.store = StateStore(self.state_dir)
        self.world = MachineWorld(images={ref: replace(img) for ref, img in IMAGES.items()}, stable_seconds=STABLE, hook_script=hook_script)
        self.world.store = self.store
        self.acc = accessory("redis:7.2", False)
        self.data: str | None = None  # the volume at the accessory's /data once the app wrote into it
        self.budget = self.world.budget
        self.resolver = SecretsResolver(None, FakeSsm())
        self.desired = Desired()
        self._set(self.desired)
        self.world.include_paths.add(self.app.upstream_file)
        self.volumes_seen: set[str] = set()
        self.scanned_logs = 0
        self.known: set[int] = set()  # known defects this example showed: its checks end there
        self.known_defects = set(KNOWN_DEFECTS)  # the scripted runs below keep only the others quiet
        self.reported = 0
        self.checked_windows: set[tuple[str, float]] = set()

    @initialize(
        verify=st.sampled_from([None, "strict"]),
        failover=st.booleans(),
        preview=st.sampled_from([None, "dialogue:3"]),
        hooks=st.sampled_from([None, "migrate"]),
        depends=st.booleans(),
    )
    def start(self, verify: str | None, failover: bool, preview: str | None, hooks: str | None, depends: bool) -> None:
        """v1 on blue, served, like a host where the app already runs, with features drawn for the example."""
        self._set(replace(self.desired, verify=verify, failover=failover, preview=preview, hooks=hooks, depends=depends))
        self._run()

    def teardown(self) -> None:
        self._stack.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # The spec --------------------------------------------------------------------------------------------------
    def _set(self, d: Desired) -> None:
        try:
            app = d.build()
        except pydantic.ValidationError:
            return  # an edit the schema refuses (a preview of the live image): the operator's spec stays
        self.desired, self.app = d, app
        self.world.app = app
        self.world.revision_extra = self.resolver(app).revision_extra

    @rule(image=st.sampled_from(["dialogue:1", "dialogue:2", "dialogue:3", "dialogue:5xx", "dialogue:loop"]))
    def deploy(self, image: str) -> None:
        """`reconcile deploy --image`: the image onto the idle color, activeColor flipped."""
        self._set(replace(self.desired, image=image, color=other(self.desired.color)))  # type: ignore[arg-type]

    @rule()
    def flip(self) -> None:
        self._set(replace(self.desired, color=other(self.desired.color)))  # type: ignore[arg-type]

    @rule(image=st.sampled_from(["dialogue:1", "dialogue:2", "dialogue:5xx"]))
    def edit_image(self, image: str) -> None:
        self._set(replace(self.desired, image=image))

    @rule(verify=st.sampled_from([None, "strict", "lax"]))
    def set_verify(self, verify: str | None) -> None:
        self._set(replace(self.desired, verify=verify))

    @rule(on=st.booleans())
    def set_failover(self, on: bool) -> None:
        self._set(replace(self.desired, failover=on))

    @rule(image=st.sampled_from([None, "dialogue:2", "dialogue:3", "dialogue:bad"]))
    def set_preview(self, image: str | None) -> None:
        self._set(replace(self.desired, preview=image))

    @rule(hooks=st.sampled_from([None, "migrate", "hung", "failing"]), seconds=st.sampled_from([0.0, 20.0]))
    def set_hooks(self, hooks: str | None, seconds: float) -> None:
        self.world.hook_seconds = seconds
        self._set(replace(self.desired, hooks=hooks))

    @rule(on=st.booleans(), standby=st.sampled_from(["keep", "stop"]), keep=st.sampled_from([1, 3]), resources=st.booleans())
    def set_housekeeping(self, on: bool, standby: str, keep: int, resources: bool) -> None:
        self._set(replace(self.desired, depends=on, standby=standby, keep_images=keep, resources=resources))

    @rule(image=st.sampled_from(["redis:7.2", "redis:7.4"]), named=st.booleans())
    def edit_accessory(self, image: str, named: bool) -> None:
        self.acc = accessory(image, named)

    @rule()
    def rollback(self) -> None:
        """`reconcile rollback`: accepted only for a warm standby (it is then the spec's activeColor)."""
        if self.store is None or self.app is None:
            return
        to = other(self.app.spec.activeColor)
        # What release's rollback gathers: the spec as it will be (the standby is then the color to take traffic).
        rolled = self.app.model_copy(update={"spec": self.app.spec.model_copy(update={"activeColor": to})})
        obs = gather(rolled, self.world, self.store).observed
        standby = obs.containers[to]
        if release._not_warm(self.app, to, obs) is not None or standby is None:
            return
        c = self.world.containers[standby.name]
        # A color Nginx serves already is no standby: the edit moves no traffic (the spec catches up with Nginx).
        if obs.serving != to and (c.restart_count or not self.world._health_now(c)):
            self.world.found.append(Violation(11, f"rollback accepted {standby.name}, restarted {c.restart_count}x by Docker"))
        self._set(replace(self.desired, image=standby.image, color=to))

    # The controller: one cron run, whole, killed, or stopped; something may happen while it runs ------------------
    @rule(
        kill=st.none() | st.integers(0, 60) | st.just("after-switch"),
        stop_after=st.none() | st.sampled_from([0.5, 3.0, 8.0]),
        during=st.none() | st.tuples(st.sampled_from([0.5, 2.0, 6.0]), st.sampled_from(["blue", "green", ACCESSORY])),
    )
    def reconcile(self, kill: int | str | None, stop_after: float | None, during: tuple[float, str] | None) -> None:
        if during is not None:
            delay, what = during
            self.world.events.append((self.world.clock + delay, lambda: self._docker_restarts(what)))
        self.world.stop_at = None if stop_after is None else self.world.clock + stop_after
        self.budget.left = kill if isinstance(kill, int) else None
        self.budget.after_switch = kill == "after-switch"
        self._run()

    @rule()
    def reconcile_whole(self) -> None:
        self._run()

    def _run(self) -> None:
        w = self.world
        logs._secrets.clear()  # a new process: nothing registered until it reads secret values (logs.register_secret)
        w.fired = False
        w.run_started = w.clock
        runner = AccessoryRunner(cast(World, Killable(w, self.budget)), self.store)
        r = Reconciler(cast(World, Killable(w, self.budget)), self.store, Metrics(), backoff_base=BACKOFF_BASE,
                       should_stop=w.should_stop, resolver=self.resolver, dependencies=runner.dependencies)  # fmt: skip
        complete, failed = False, False
        try:
            runner.reconcile_all([self.acc])
            res = r.reconcile(self.app)
            complete = res.status is not None and not w.fired and not w.should_stop()
            failed = res.error is not None
        except (Crash, Wedged):
            pass
        finally:
            self.budget.left, self.budget.after_switch = None, False
            w.stop_at = w.run_started = None
            w.events.clear()
        self._after_run(complete, failed)

    # Perturbations ------------------------------------------------------------------------------------------------
    def _docker_restarts(self, what: str) -> None:
        self.world.docker_restarted(what if what == ACCESSORY else f"{APP}-{what}")

    @rule(what=st.sampled_from(["blue", "green", ACCESSORY]))
    def docker_restarts(self, what: str) -> None:
        self._docker_restarts(what)

    @rule(color=st.sampled_from(["blue", "green"]))
    def container_exits(self, color: str) -> None:
        c = self.world.containers.get(f"{APP}-{color}")
        if c is not None and c.command is None:
            c.fact = replace(c.fact, state="exited")

    @rule(color=st.sampled_from(["blue", "green"]), broken=st.booleans())
    def break_app(self, color: str, broken: bool) -> None:
        c = self.world.containers.get(f"{APP}-{color}")
        if c is not None:
            c.broken = broken

    @rule(healthy=st.booleans())
    def accessory_health(self, healthy: bool) -> None:
        c = self.world.containers.get(ACCESSORY)
        if c is not None:
            c.broken = not healthy

    @rule()
    def write_accessory_data(self) -> None:
        """The app writes into the accessory's /data: the volume there must stay the accessory's /data."""
        c = self.world.containers.get(ACCESSORY)
        self.data = next((vol for vol, path in c.mounts.items() if path == "/data"), None) if c is not None else None

    @rule(low=st.booleans())
    def host_memory(self, low: bool) -> None:
        self.world.mem_available = 300 * 1024**2 if low else 6 * 1024**3

    @rule(seconds=st.sampled_from([1.0, 5.0, 30.0, 300.0]))
    def time_passes(self, seconds: float) -> None:
        self.world.advance(seconds)

    @rule(delta=st.sampled_from([-86_400.0, -30.0, 120.0, 3600.0]))
    def clock_steps(self, delta: float) -> None:
        self.world.step_clock(delta)

    # After a run: what the state dir and the world must say ----------------------------------------------------
    def _after_run(self, complete: bool, failed: bool) -> None:
        w = self.world
        w.note_failures()
        self._windows()
        self._explained()
        if complete:
            live = self._live()
            want = self.app.spec.activeColor
            rev = self.app.revision(want, w.revision_extra)
            c = w.containers.get(f"{APP}-{want}")
            if live == want and c is not None and c.fact.revision == rev and self.app.spec.verify is None and rev not in self.store.load_memory(APP).failures:
                w.failed.pop(rev, None)  # deployed and serving since, with nothing left to verify: no longer failed
            marker = (w.files.get(self.app.marker_path) or "").strip()
            if live is not None and marker != live:
                w.found.append(Violation(13 if failed else None, f"after a complete pass the marker says {marker!r}, Nginx serves {live}"))
            self._preview_proven()

    def _live(self) -> str | None:
        servers = self.world.routed(APP)
        return next((c for c in ("blue", "green") if self.world._on(servers, c)), None)

    def _windows(self) -> None:
        """A window that passed: the fake's own log of what the color answered since it got traffic must agree."""
        w = self.store.load_window(APP)
        if w is None:
            return
        if w.state == "passed" and (w.revision, w.started_at) not in self.checked_windows:
            self.checked_windows.add((w.revision, w.started_at))
            since = max((t for t, c, _ in self.world.route_changes if c == w.color), default=0.0)
            address = upstream_address(self.app, w.color)
            answers = [s for t, a, s in self.world.served if t >= since and a == address]
            v = self.app.spec.verify
            if v is not None and len(answers) >= 2 * v.minRequests and all(s >= 500 for s in answers):
                self.world.found.append(Violation(10, f"window passed {w.color} ({w.figures}) though all {len(answers)} requests it served failed"))
            elif self.world.clock - since < w.deadline - w.started_at - 1:  # its length as it opened (a later edit aside)
                self.world.found.append(Violation(10, f"window passed {w.color} after {self.world.clock - since:g}s of traffic, not {w.deadline - w.started_at:g}s"))
        if w.state == "passed":
            self.world.failed.pop(w.revision, None)  # proven since: a later route to it is no route to a failed one

    def _explained(self) -> None:
        """Traffic the controller moved off the desired color is explained by the state dir (a kill -9 included)."""
        want = self.app.spec.activeColor
        live = self._live()
        changes = self.world.route_changes
        if live is None or live == want or not changes or changes[-1][1:] != (live, self.app.generation()):
            return  # not moved there by the controller under this spec
        fo = self.store.load_failover(APP)
        mem = self.store.load_memory(APP)
        held = mem.failures.get(self.app.revision(want, self.world.revision_extra))
        # An active failover, or one announced before its switch (made active by the next observation: a kill -9
        # between the switch and that observation leaves the announcement).
        if any(f is not None and f.to_color == live for f in (fo.active, fo.switching)) or held is not None:
            return
        if self.app.spec.failover != "none":
            self.world.found.append(Violation(5, f"Nginx serves {live}, the spec wants {want}; no failover or held revision in the state dir says why"))

    def _preview_proven(self) -> None:
        w = self.world
        if not w.preview_flag_present(APP):
            return
        pr, live = w.preview_routed(APP), w.routed(APP)
        if pr == live or not pr:
            return
        port = port_of(pr[0])
        c = next((c for c in w.containers.values() if c.fact.host_port == port and c.command is None), None)
        if c is None or c.fact.state != "running" or not w._health_now(c):
            a = w.containers.get(ACCESSORY)
            down = self.app.spec.dependsOn and (a is None or a.state != "running" or a.broken)
            w.found.append(Violation(12 if down else None, f"preview requests reach {pr[0]}, which is {c.fact.state if c else 'gone'}"))

    # Invariants ------------------------------------------------------------------------------------------------
    @invariant()
    def no_violation(self) -> None:
        for v in self.world.found[self.reported :]:
            if self.known:
                break  # the example already showed a known defect: what follows may be its consequence
            if v.defect is not None and v.defect in self.known_defects:
                self.known.add(v.defect)
                event(f"known defect #{v.defect} of issue 19")
                continue
            raise AssertionError(f"defect #{v.defect}: {v.text}" if v.defect else v.text)
        self.reported = len(self.world.found)

    @invariant()
    def no_secret_fragment(self) -> None:
        leaks = [f"state file {p.relative_to(self.state_dir)}" for p in sorted(self.state_dir.rglob("*")) if p.is_file() and _leaks(p.read_text(errors="replace"))]
        for e in self.logs[self.scanned_logs :]:
            if _leaks(repr(e)):
                leaks.append(f"log line {e.get('event')}")
        self.scanned_logs = len(self.logs)
        if leaks:
            registered = all(v in logs._secrets for v in SECRETS.values())
            self.world.found.append(Violation(1 if registered else 8, f"a secret fragment in {', '.join(sorted(set(leaks)))}"))
            self.no_violation()

    @invariant()
    def no_volume_removed_and_data_kept(self) -> None:
        now = set(self.world.volumes)
        assert self.volumes_seen <= now, f"volumes removed: {self.volumes_seen - now}"
        self.volumes_seen = now
        c = self.world.containers.get(ACCESSORY)
        named = next((vol for vol, path in self.acc.spec.volumes.items() if path == "/data"), None)
        if self.data is not None and (named != self.data if named is not None else not is_anonymous(self.data)):
            self.data = None  # the operator mounts another volume at /data (or none): the data stays in its own (--plan warns)
        if self.data is not None and c is not None and c.mounts.get(self.data) != "/data":
            self.world.found.append(Violation(7, f"{ACCESSORY} was recreated without its /data volume {self.data[:12]}: the data is gone"))
            self.data = None
            self.no_violation()


def _leaks(text: str) -> bool:
    return any(text[i : i + FRAGMENT] in _FRAGMENTS for i in range(len(text) - FRAGMENT + 1))


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.isdigit() else default


TestCombined = CombinedMachine.TestCase
TestCombined.settings = settings(
    max_examples=_int_env("BLUEGREEN_MACHINE_EXAMPLES", 100),
    stateful_step_count=_int_env("BLUEGREEN_MACHINE_STEPS", 30),
    deadline=None,
    derandomize=not _hunt and "BLUEGREEN_MACHINE_EXAMPLES" not in os.environ,
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


# Each defect of issue 19 as the machine reaches it: a short run of its own rules (what a shrunk counterexample
# looks like). They fail on the defect, as the machine does (xfail while it is in KNOWN_DEFECTS: strict, so a
# fix that lands without its entry removed is noticed). #9 (unsigned commits under a signed one) lies in the git
# source, outside the World: tests/test_gitops.py covers it on real git.
Step = tuple[str, dict[str, Any]]
WHOLE: Step = ("reconcile_whole", {})
SCENARIOS: dict[int | str, list[Step]] = {
    1: [("set_hooks", {"hooks": "migrate", "seconds": 0.0}), ("deploy", {"image": "dialogue:2"}), WHOLE],
    2: [("set_verify", {"verify": "strict"}), ("deploy", {"image": "dialogue:5xx"}),
        ("reconcile", {"kill": None, "stop_after": None, "during": (2.0, "blue")})],
    3: [("set_verify", {"verify": "strict"}), ("set_preview", {"image": "dialogue:3"}), ("deploy", {"image": "dialogue:2"}), WHOLE],
    4: [("set_verify", {"verify": "strict"}), ("deploy", {"image": "dialogue:5xx"}), WHOLE, ("deploy", {"image": "dialogue:1"}),
        ("container_exits", {"color": "blue"}), WHOLE, ("set_failover", {"on": True}), ("break_app", {"color": "blue", "broken": True}),
        WHOLE, ("time_passes", {"seconds": 5.0}), WHOLE],
    5: [("set_failover", {"on": True}), ("deploy", {"image": "dialogue:2"}), WHOLE, ("break_app", {"color": "green", "broken": True}),
        ("reconcile", {"kill": "after-switch", "stop_after": None, "during": None})],
    6: [("set_hooks", {"hooks": "migrate", "seconds": 20.0}), ("deploy", {"image": "dialogue:2"}),
        ("reconcile", {"kill": None, "stop_after": 3.0, "during": None}), ("edit_image", {"image": "dialogue:3"}), WHOLE],
    7: [("write_accessory_data", {}), ("edit_accessory", {"image": "redis:7.4", "named": False}), WHOLE],
    8: [("set_hooks", {"hooks": "migrate", "seconds": 20.0}), ("deploy", {"image": "dialogue:2"}),
        ("reconcile", {"kill": None, "stop_after": 3.0, "during": None}), ("deploy", {"image": "dialogue:1"}),
        ("time_passes", {"seconds": 30.0}), WHOLE],
    10: [("set_verify", {"verify": "strict"}), ("deploy", {"image": "dialogue:2"}),
         ("reconcile", {"kill": None, "stop_after": 3.0, "during": None}), ("clock_steps", {"delta": -86_400.0}), WHOLE],
    "10-forward": [("set_verify", {"verify": "strict"}), ("deploy", {"image": "dialogue:5xx"}),
                   ("reconcile", {"kill": "after-switch", "stop_after": None, "during": None}), ("clock_steps", {"delta": 120.0}), WHOLE],
    11: [("deploy", {"image": "dialogue:2"}), WHOLE, ("docker_restarts", {"what": "blue"}), ("rollback", {})],
    13: [("flip", {}), ("reconcile", {"kill": "after-switch", "stop_after": None, "during": None}), ("flip", {}),
         ("container_exits", {"color": "green"}), ("deploy", {"image": "dialogue:loop"}), WHOLE],
    12: [("set_housekeeping", {"on": True, "standby": "keep", "keep": 3, "resources": False}), ("set_preview", {"image": "dialogue:2"}),
         WHOLE, ("accessory_health", {"healthy": False}), ("container_exits", {"color": "green"}), WHOLE],
}


def run_scenario(steps: list[Step], quiet: frozenset[int] = frozenset()) -> CombinedMachine:
    """The steps with the machine's checks after each; `quiet`: defects that end the run silently."""
    m = CombinedMachine()
    m.known_defects = set(quiet)
    try:
        m.start(verify=None, failover=False, preview=None, hooks=None, depends=False)
        m.no_violation()
        for name, args in steps:
            getattr(m, name)(**args)
            m.no_violation()
            m.no_secret_fragment()
            m.no_volume_removed_and_data_kept()
    finally:
        m.teardown()
    return m


def _defect(name: int | str) -> int:
    return name if isinstance(name, int) else int(name.split("-")[0])


def _known(n: int | str) -> Any:
    return pytest.mark.xfail(_defect(n) in KNOWN_DEFECTS, reason=KNOWN_DEFECTS.get(_defect(n), ""), raises=AssertionError, strict=True)


@pytest.mark.parametrize("name", [pytest.param(n, marks=_known(n)) for n in SCENARIOS])
def test_machine_reaches_defect(name: int | str) -> None:
    defect = _defect(name)
    try:
        run_scenario(SCENARIOS[name], quiet=ISSUE_19 - {defect})  # another defect first ends it quietly: an XPASS
    except AssertionError as e:
        if not str(e).startswith(f"defect #{defect}:"):
            raise RuntimeError(f"the run for defect #{defect} failed otherwise: {e}") from e
        raise
