"""Contract: the in-memory `FakeWorld` behaves like the real `HostWorld` as far as the controller observes.

Every test here runs the same calls and the same assertions against both worlds: the real one on a real
dockerd, real test images (tests/conftest.py, tests/support/: the app images, the Redis image) and a private
real nginx; the fake one configured to match (same image names, same ports, same paths, the same commands
scripted). Together they call every `World` method (apps, accessories, the access log, Prometheus, host facts):
`test_every_world_method_is_exercised_here` fails when a method is added to the protocol and not called here.
`test_same_plans_on_both_worlds` puts both worlds in the same situations and requires gather() + decide() to
agree exactly. When they disagree, the fake is what gets fixed (controller/world/fake.py), never the assertion.
"""

from __future__ import annotations

import ast
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from controller.app.plan import Plan
from controller.app.reconcile import Reconciler
from controller.app.routing import health_url, render_include, route_fact, route_probe_url
from controller.kernel.errors import DockerError, HostError, ImageError, NginxError
from controller.spec.app import BlueGreenApp, Color, NginxSpec
from controller.store.metrics import Metrics
from controller.store.state import StateStore
from controller.world.facts import (
    LABEL_ACCESSORY,
    LABEL_APP,
    LABEL_COLOR,
    LABEL_MANAGED,
    LABEL_ONEOFF,
    LABEL_REVISION,
    MANAGED_BY,
    ContainerFact,
)
from controller.world.fake import FakeImage, FakeWorld
from controller.world.protocol import AccessoryRequest, ContainerRequest, LogPos, OneOff, RunState, World
from tests.factories import make_app
from tests.support.containers import LABEL_TEST
from tests.support.net import free_port
from tests.support.nginx import SITE_TEMPLATE
from tests.support.plans import inputs_for, plan_for

T = TypeVar("T")

# An image reference no registry can serve: the pull fails at once (connection refused on loopback).
MISSING_IMAGE = "127.0.0.1:9/bgtest/missing:nope"
# nginx.switch must match the site: the default (flag) needs the flag-aware site of nginx/ (`if (-f <flag>)`); the
# test nginx's default site (tests/support/nginx.SITE_TEMPLATE) is a plain `proxy_pass http://<app>`: reload.
RELOAD_SWITCH = {} if "if (-f" in SITE_TEMPLATE else {"switch": "reload"}
assert NginxSpec.model_fields["switch"].default == "flag"  # so RELOAD_SWITCH is what makes these specs reload
PLACEHOLDER = "# placeholder\nupstream {app} {{\n    server 127.0.0.1:9 down;\n}}\n"


@dataclass
class Rig:
    """One world plus everything needed to drive it identically to the other one."""

    kind: str  # "host" | "fake"
    world: World
    app: BlueGreenApp
    images: dict[str, str]  # healthy, healthy2, never, crash
    labels: dict[str, str]
    tmp: Path
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.app.name

    def request(self, color: Color, image: str, *, port: int | None = None, name: str | None = None) -> ContainerRequest:
        return ContainerRequest(
            name=name or self.app.container_name(color),
            image=image,
            labels={**self.labels, LABEL_APP: self.name, LABEL_COLOR: color, LABEL_REVISION: f"rev-{color}"},
            env={"CONTRACT": "1"},
            container_port=8081,
            host_ip="127.0.0.1",
            host_port=port if port is not None else self.app.spec.ports.of(color),
        )

    def fact(self, name: str) -> ContainerFact | None:
        return next((c for c in self.world.list_containers() if c.name == name), None)

    def eventually(self, fn: Callable[[], T], what: str, timeout: float = 20.0) -> T:
        """Poll `fn` on the world's own clock (the fake's advances when it sleeps); bounded."""
        deadline = self.world.now() + timeout
        for _ in range(2000):
            value = fn()
            if value:
                return value
            if self.world.now() >= deadline:
                break
            self.world.sleep(0.1)
        raise AssertionError(f"{self.kind}: {what} not met within {timeout:g}s (last: {value!r})")


def _app(name: str, tmp: Path, blue: int, green: int, control_url: str, test_cmd: list[str], reload_cmd: list[str],
         upstream_file: Path, labels: dict[str, str], image: str) -> BlueGreenApp:
    return make_app(
        name,
        image=image,
        ports={"blue": blue, "green": green},
        healthCheck={"intervalSeconds": 0.2, "timeoutSeconds": 20, "requestTimeoutSeconds": 2},
        marker=str(tmp / "marker" / name / "active"),
        labels=labels,
        keepImages=10_000,  # pruning would remove the shared bgtest:* images other tests use
        nginx={
            "upstreamFile": str(upstream_file),
            "testCommand": test_cmd,
            "reloadCommand": reload_cmd,
            "controlUrl": control_url,
            "verifyTimeoutSeconds": 10,
            **RELOAD_SWITCH,
        },
    )


def host_rig(request: pytest.FixtureRequest, tmp: Path, ports: tuple[int, int]) -> Rig:
    from controller.drivers.host import HostWorld

    images: dict[str, str] = request.getfixturevalue("test_images")
    labels: dict[str, str] = request.getfixturevalue("session_labels")
    name: str = request.getfixturevalue("app_name")
    nginx = request.getfixturevalue("nginx")
    app = _app(name, tmp, *ports, nginx.control_url, nginx.test_command, nginx.reload_command,
               nginx.upstream_file(name), labels, images["v1"])
    world = HostWorld()
    rig = Rig("host", world, app, {"healthy": images["v1"], "healthy2": images["v2"], "never": images["never"], "crash": images["crash"]}, labels, tmp)
    rig.cleanup.append(world.close)
    return rig


def fake_rig(name: str, tmp: Path, ports: tuple[int, int], labels: dict[str, str], app: BlueGreenApp | None = None) -> Rig:
    """A FakeWorld set up like `host_rig`'s host: same image names, an nginx with a placeholder include."""
    images = {"healthy": "bgtest:v1", "healthy2": "bgtest:v2", "never": "bgtest:never", "crash": "bgtest:crash"}
    world = FakeWorld(
        images={images["healthy"]: FakeImage(), images["healthy2"]: FakeImage(), images["never"]: FakeImage("never"), images["crash"]: FakeImage("crash")}
    )
    if app is None:
        upstream = tmp / "nginx" / "conf.d" / f"{name}.upstream.conf"
        app = _app(name, tmp, *ports, "http://127.0.0.1:8099", ["nginx", "-t"], ["nginx", "-s", "reload"], upstream, labels, images["healthy"])
    world.include_paths.add(app.upstream_file)
    world.files[app.upstream_file] = PLACEHOLDER.format(app=name)
    world.reload()  # nginx started with the placeholder, like tests/support/nginx.py does
    return Rig("fake", world, app, images, labels, tmp)


def make_rig(kind: str, request: pytest.FixtureRequest, tmp: Path, ports: tuple[int, int]) -> Rig:
    if kind == "host":
        return host_rig(request, tmp, ports)
    return fake_rig(f"t{os.urandom(4).hex()}", tmp, ports, {LABEL_TEST: "contract"})


# The real halves need a real dockerd (and nginx); the fixtures are reached through getfixturevalue, so the
# markers conftest adds by fixture name are set here.
HOST = pytest.param("host", marks=[pytest.mark.docker, pytest.mark.nginx])
HOST_DOCKER = pytest.param("host", marks=[pytest.mark.docker])


@pytest.fixture(params=[HOST, "fake"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    r = make_rig(request.param, request, tmp_path / request.param, (free_port(), free_port()))
    try:
        yield r
    finally:
        for fn in r.cleanup:
            fn()


# --------------------------------------------------------------------------------------------- scenario


def test_world_contract(rig: Rig) -> None:
    w, app = rig.world, rig.app
    blue, green = app.container_name("blue"), app.container_name("green")
    pb, pg = app.spec.ports.blue, app.spec.ports.green
    hc = app.spec.healthCheck

    def health(color: Color) -> Any:
        return w.probe_health(health_url(app, color), hc.expectStatus, hc.requestTimeoutSeconds)

    # Nothing yet: nothing listed, nothing answers.
    assert rig.fact(blue) is None and rig.fact(green) is None
    refused = health("blue")
    assert not refused.ok and refused.detail == "connection refused"
    # Nginx runs with a placeholder upstream whose only server is down: 502, $upstream_addr = the upstream's name.
    probe = w.probe_route(route_probe_url(app), 2)
    assert (probe.reachable, probe.upstream, probe.detail) == (True, app.name, f"HTTP 502 via {app.name}")
    assert route_fact(app, probe).color is None

    # A healthy image: listed with every fact the planner uses, and its health check passes.
    req = rig.request("blue", rig.images["healthy"])
    w.create_container(req)
    c = rig.fact(blue)
    assert c is not None
    assert (c.name, c.image, c.state, c.running) == (blue, rig.images["healthy"], "running", True)
    assert (c.host_ip, c.host_port) == ("127.0.0.1", pb)
    assert req.labels.items() <= c.labels.items()
    assert c.revision == "rev-blue"
    assert c.id and c.image_id.startswith("sha256:")
    ok = rig.eventually(lambda: health("blue").ok, "blue healthy")
    assert ok
    assert health("blue").detail == "HTTP 200 UP"
    # docker inspect: one uninterrupted run, never restarted (rule 1 needs these facts).
    run = w.run_state(blue)
    assert run is not None and (run.running, run.restarting, run.restart_count) == (True, False, 0)
    started = run.started_at
    assert started is not None and abs(started - w.now()) < 120
    # Its process's age on the boot clock, which wall-clock steps do not move, agrees with StartedAt's.
    assert run.uptime is not None and 0 <= run.uptime < 120 and abs((w.now() - started) - run.uptime) < 5
    assert w.run_state(green) is None
    # Observation inspects the color that may get traffic and does not serve (Nginx has only its placeholder).
    seen = inputs_for(app, w).observed.containers["blue"]
    assert seen is not None and seen.healthy and (seen.restart_count, seen.started_at, seen.restarting) == (0, run.started_at, False)
    assert seen.uptime is not None and seen.uptime >= run.uptime

    # A never-healthy image answers, but not healthy.
    w.create_container(rig.request("green", rig.images["never"]))
    answered = rig.eventually(lambda: (r := health("green")).detail.startswith("HTTP") and r, "green answers")
    assert not answered.ok
    assert answered.detail == "HTTP 503"
    never = w.run_state(green)
    assert never is not None and never.running and never.started_at is not None
    w.remove_container(green)
    assert rig.fact(green) is None

    # A crashing image under restart policy unless-stopped: Docker restarts it again and again, each run
    # with a later StartedAt and a restart count one higher (what tells a crash loop from a steady color).
    w.create_container(rig.request("green", rig.images["crash"]))
    first = w.run_state(green)
    assert first is not None and first.restart_count == 0 and first.started_at is not None

    def restarted_twice() -> RunState | None:
        r = w.run_state(green)
        return r if r is not None and r.restart_count >= 2 else None

    looped = rig.eventually(restarted_twice, "green restarted twice")
    assert looped is not None and looped.started_at is not None and looped.started_at > first.started_at
    w.remove_container(green)

    # Stop: not running, but the port it is bound to is still known (the planner needs it).
    w.stop_container(blue, 2)
    c = rig.fact(blue)
    assert c is not None and not c.running and c.state == "exited"
    assert (c.host_ip, c.host_port) == ("127.0.0.1", pb)
    assert not health("blue").ok
    stopped = w.run_state(blue)
    assert stopped is not None and (stopped.running, stopped.restarting, stopped.uptime) == (False, False, None)

    # Start again: running and healthy.
    w.start_container(blue)
    c = rig.fact(blue)
    assert c is not None and c.running and c.host_port == pb
    rig.eventually(lambda: health("blue").ok, "blue healthy after start")
    restarted = w.run_state(blue)
    assert restarted is not None and restarted.running and restarted.restart_count == 0  # `docker start` resets it
    assert restarted.started_at is not None and started is not None and restarted.started_at > started
    # A new process: its age counts from this start, not from the container's first.
    assert restarted.uptime is not None and restarted.uptime <= w.now() - started

    # Remove: gone; removing what is gone is not an error.
    w.remove_container(blue)
    assert rig.fact(blue) is None
    w.remove_container(blue)

    # A missing image cannot be created, and nothing is left behind.
    with pytest.raises(ImageError):
        w.create_container(rig.request("blue", MISSING_IMAGE))
    assert rig.fact(blue) is None

    # A name in use, and a host port in use: DockerError, nothing half-made left behind.
    w.create_container(rig.request("blue", rig.images["healthy"]))
    with pytest.raises(DockerError):
        w.create_container(rig.request("blue", rig.images["healthy2"], port=pg))
    c = rig.fact(blue)
    assert c is not None and c.image == rig.images["healthy"]
    with pytest.raises(DockerError):
        w.create_container(rig.request("green", rig.images["healthy2"], port=pb))
    assert rig.fact(green) is None
    rig.eventually(lambda: health("blue").ok, "blue healthy")

    # Route: write the include, test, reload; Nginx then really routes to that port.
    include = app.upstream_file
    w.write_file(include, render_include(app, "blue"))
    w.run(app.spec.nginx.testCommand, 30)
    w.run(app.spec.nginx.reloadCommand, 30)
    fact = rig.eventually(lambda: (f := route_fact(app, w.probe_route(route_probe_url(app), 2))).color == "blue" and f, "route to blue")
    assert fact and fact.reachable and fact.upstream.split(",")[-1].strip() == f"127.0.0.1:{pb}"

    # An invalid include fails the test command with NginxError; the live route does not move.
    good = w.read_file(include)
    w.write_file(include, "upstream broken {\n    server 127.0.0.1:1;\n")
    with pytest.raises(NginxError):
        w.run(app.spec.nginx.testCommand, 30)
    assert good is not None
    w.write_file(include, good)
    w.run(app.spec.nginx.testCommand, 30)
    # (eventually: a worker of the config before the reload above may still take a new connection for a
    # moment and answer from the placeholder include; the broken include itself was never loaded.)
    rig.eventually(lambda: route_fact(app, w.probe_route(route_probe_url(app), 2)).color == "blue", "route still blue")

    # Files: a missing file reads as None; writes replace the whole file; remove is idempotent.
    f = rig.tmp / "files" / "sub" / "marker"
    assert w.read_file(f) is None
    w.write_file(f, "blue\n")
    assert w.read_file(f) == "blue\n"
    w.write_file(f, "green\n")
    assert w.read_file(f) == "green\n"
    if rig.kind == "host":
        assert sorted(p.name for p in f.parent.iterdir()) == ["marker"], "atomic write left a temporary file"
    w.remove_file(f)
    assert w.read_file(f) is None
    w.remove_file(f)

    # Clock.
    t0, m0 = w.now(), w.monotonic()
    w.sleep(0.05)
    assert w.now() >= t0 + 0.04 and w.monotonic() >= m0 + 0.04
    # The boot those readings are of: one id, the same while the host runs (a reboot changes it).
    boot = w.boot_id()
    assert boot and len(boot) <= 64 and w.boot_id() == boot
    if rig.kind == "host":
        assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_capacity_contract(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """host_capacity (issue 14) and container limits: what the capacity rule and spec.resources rely on."""
    w, app = rig.world, rig.app
    blue, green = app.container_name("blue"), app.container_name("green")
    healthy = rig.images["healthy"]

    before = w.host_capacity(healthy, (blue,), None)
    assert 0 < before.mem_available <= before.mem_total
    assert before.usage == {}  # nothing runs under that name
    assert before.image_present and before.disk_free is None  # present: no pull, no disk figure
    assert before.cpus is not None and before.cpus >= 1

    req = replace(rig.request("blue", healthy), memory=64 * 1024**2, memory_reservation=32 * 1024**2, nano_cpus=500_000_000, pids_limit=64)
    w.create_container(req)
    c = rig.fact(blue)
    assert c is not None and c.running
    pulled = w.host_capacity(MISSING_IMAGE, (blue, green), c.image_id)
    assert set(pulled.usage) == {blue} and 0 < pulled.usage[blue] <= 64 * 1024**2  # within its limit
    assert not pulled.image_present
    assert pulled.image_size is not None and pulled.image_size > 0  # the live image: the estimate for the pull
    assert pulled.docker_root.startswith("/") and pulled.disk_free is not None and pulled.disk_free > 0

    # More CPUs than the host has: Docker refuses the container, nothing is left behind.
    with pytest.raises(DockerError):
        w.create_container(replace(rig.request("green", healthy), nano_cpus=(before.cpus + 1) * 10**9))
    assert rig.fact(green) is None

    # An unreadable meminfo (here: BLUEGREEN_MEMINFO naming no file) is a HostError naming it.
    if isinstance(w, FakeWorld):
        w.meminfo_missing = True
    else:
        monkeypatch.setenv("BLUEGREEN_MEMINFO", str(rig.tmp / "no-such-meminfo"))
    with pytest.raises(HostError, match="capacity check: cannot read"):
        w.host_capacity(healthy, (blue,), None)


# --------------------------------------------------------------------------------------------- plans


def _summary(p: Plan) -> dict[str, Any]:
    return {
        "actions": [(a.verb, a.color, a.reason) for a in p.actions],
        "blockers": [(b.reason, b.message) for b in p.blockers],
        "diffs": list(p.diffs),
        "serving": p.serving,
        "target": p.target,
        "revisions": p.revisions,
    }


def _variant(app: BlueGreenApp, **spec: Any) -> BlueGreenApp:
    doc = app.model_dump(mode="json")
    doc["spec"].update(spec)
    return BlueGreenApp.model_validate(doc)


@pytest.mark.docker
@pytest.mark.nginx
def test_same_plans_on_both_worlds(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    shared = tmp_path / "shared"  # same marker path in both worlds (the fake never touches the disk)
    host = make_rig("host", request, shared, ports)
    # Identical desired state, so revisions, paths and messages must match byte for byte.
    fake = fake_rig(host.name, shared, ports, host.labels, app=host.app)
    rigs = (host, fake)
    try:
        stores = {r.kind: StateStore(tmp_path / f"state-{r.kind}") for r in rigs}

        def plans(situation: str) -> None:
            got = {}
            for r in rigs:
                got[r.kind] = _summary(plan_for(r.app, r.world, stores[r.kind]))
            assert got["host"] == got["fake"], situation

        def converge() -> None:
            for r in rigs:
                res = Reconciler(r.world, stores[r.kind], Metrics()).reconcile(r.app)
                assert res.converged, (r.kind, res.result, res.error)

        plans("fresh host")
        converge()
        plans("converged")
        for r in rigs:
            r.world.stop_container(r.app.container_name("blue"), 2)
        plans("live container stopped")
        converge()
        for r in rigs:
            r.world.write_file(r.app.marker_path, "garbage\n")
        plans("marker garbage")
        converge()
        plans("converged again")
        for r in rigs:
            r.world.remove_file(r.app.upstream_file)
        plans("include deleted")
        converge()
        for r in rigs:  # a hand edit made live: Nginx routes to green, which has no container
            r.world.write_file(r.app.upstream_file, render_include(r.app, "green"))
            r.world.run(r.app.spec.nginx.reloadCommand, 30)
            app = r.app

            def green_live(app: BlueGreenApp = app, w: World = r.world) -> bool:
                return route_fact(app, w.probe_route(route_probe_url(app), 2)).color == "green"

            r.eventually(green_live, "hand edit live")
        plans("nginx routes to a color without a container")
        converge()
        deploy = _variant(host.app, image=host.images["healthy2"], activeColor="green")
        for r in rigs:
            r.app = deploy
        plans("deploy v2 to green")
        converge()
        plans("deployed")
        rollback = _variant(host.app, image=host.images["healthy"], activeColor="blue")
        for r in rigs:
            r.app = rollback
        plans("rollback to blue")
        converge()
        plans("rolled back")
    finally:
        for fn in host.cleanup:
            fn()


# --------------------------------------------------------------------------------------------- deploy gates


def test_hook_and_check_contract(rig: Rig) -> None:
    """The World operations of spec.hooks / spec.checks (issue 12), the same calls and assertions on both worlds."""
    from controller.world.facts import LABEL_HOOK, LABEL_MANAGED, MANAGED_BY
    from controller.world.protocol import HookRequest

    w, app = rig.world, rig.app
    fake = w if isinstance(w, FakeWorld) else None
    labels = {**rig.labels, LABEL_APP: app.name, LABEL_MANAGED: MANAGED_BY, LABEL_HOOK: "beforeSwitch", LABEL_REVISION: "rev-h"}
    name = f"{app.name}-hook-beforeswitch-rev-h"
    script = ["sh", "-c", 'echo "one $HOOK_ENV"; echo two; exit 3']
    if fake is not None:
        fake.hook_script = lambda argv, env: (3, (f"one {env['HOOK_ENV']}", "two")) if argv == script else (0, ())
    assert w.find_hook(labels) is None

    # Created, not started; found by its labels; started, it runs its command (not the image's entrypoint).
    w.create_hook(HookRequest(name, rig.images["healthy"], labels, {"HOOK_ENV": "x1"}, script))
    h = w.find_hook(labels)
    assert h is not None and (h.name, h.state, h.exit_code) == (name, "created", None)
    c = rig.fact(name)
    assert c is not None and c.labels[LABEL_HOOK] == "beforeSwitch" and c.host_port is None  # listed, no port
    w.start_container(name)
    code = rig.eventually(lambda: w.wait_hook(name, 2) is not None and w.wait_hook(name, 2), "hook exited")
    assert code == 3
    h = w.find_hook(labels)
    assert h is not None and (h.state, h.exit_code) == ("exited", 3) and h.started_at is not None
    assert abs(h.started_at - w.now()) < 120
    assert w.hook_logs(name) == ("one x1", "two")
    w.remove_container(name)
    assert w.find_hook(labels) is None

    # One that runs on: a wait ends at its timeout with no exit code; removing it kills it.
    if fake is not None:
        fake.hook_seconds = 60.0
    w.create_hook(HookRequest(name, rig.images["healthy"], labels, {}, ["sh", "-c", "sleep 60"]))
    w.start_container(name)
    assert w.wait_hook(name, 0.5) is None
    h = w.find_hook(labels)
    assert h is not None and h.state == "running" and h.exit_code is None
    w.remove_container(name)
    assert w.find_hook(labels) is None

    # Check commands on the host: exactly the env given, output tail, exit code; killed at the timeout.
    argv = ["sh", "-c", 'echo "$BLUEGREEN_TARGET_PORT ${HOME:-nohome}"; echo err >&2; exit 4']
    slow = ["sh", "-c", "echo started; sleep 5"]
    if fake is not None:
        fake.check_script = lambda a, env: (4, (f"{env['BLUEGREEN_TARGET_PORT']} nohome", "err")) if a == argv else (None, ("started",))
    r = w.run_check(argv, {"BLUEGREEN_TARGET_PORT": "1234"}, 10)
    assert (r.exit_code, r.output) == (4, ("1234 nohome", "err"))
    r = w.run_check(slow, {}, 0.5)
    assert (r.exit_code, r.output) == (None, ("started",))

    # HTTP checks against a healthy color: status and body text.
    w.create_container(rig.request("blue", rig.images["healthy"]))
    url = f"http://127.0.0.1:{app.spec.ports.blue}/version"
    rig.eventually(lambda: w.probe_check(url, 200, "v1", 2).ok, "http check passes")
    assert w.probe_check(url, 200, "v1", 2).detail == "HTTP 200"
    assert w.probe_check(url, 201, None, 2).detail == "HTTP 200, want 201"
    missing = w.probe_check(url, 200, "not-in-the-body", 2)
    assert not missing.ok and "lacks the expected text" in missing.detail
    refused = w.probe_check(f"http://127.0.0.1:{app.spec.ports.green}/version", 200, None, 2)
    assert (refused.ok, refused.detail) == (False, "connection refused")
    w.remove_container(app.container_name("blue"))


@pytest.mark.parametrize("kind", ["host", "fake"])
def test_prometheus_query_contract(kind: str) -> None:
    """verify.prometheus: the same answers from both worlds for one number, no sample, several, and nobody there."""
    from controller.drivers.host import HostWorld
    from tests.support.promserver import prom_server, vector

    answers = {"vector(5)": vector("5"), "empty": vector(), "two": vector("1", "2"), "nan": vector("NaN")}
    fake = FakeWorld(prom_answers=answers)
    host = HostWorld()
    try:
        with prom_server(answers) as server:
            w: World = host if kind == "host" else fake
            url = server.url if kind == "host" else "http://prometheus.invalid:9090"
            got = [w.query_prometheus(url, q, 2) for q in ("vector(5)", "empty", "two", "nan")]
            assert [(a.value, a.detail) for a in got] == [
                (5.0, "5"),
                (None, "no sample (empty vector)"),
                (None, "2 samples, not one number"),
                (None, "NaN, not a number"),
            ]
            secret = w.query_prometheus(url.replace("//", "//user:s3cret@"), "vector(5)", 2)
            assert (secret.value, secret.detail) == (None, "credentials in the Prometheus URL refused")
            assert server.hits.get("/api/v1/query", 0) == (4 if kind == "host" else 0)
        fake.prom_up = False
        down = (host if kind == "host" else fake).query_prometheus(f"http://127.0.0.1:{free_port()}", "vector(5)", 2)
        assert (down.value, down.detail) == (None, "connection refused")
    finally:
        host.close()


# --------------------------------------------------------------------------------------------- images, drains


def test_image_and_connection_contract(rig: Rig, request: pytest.FixtureRequest) -> None:
    """ensure_image, list_images, image_ids_in_use, remove_image (pruning) and connections_to (a drain)."""
    w, app = rig.world, rig.app
    blue = app.container_name("blue")
    healthy = rig.images["healthy"]

    w.ensure_image(healthy)  # present: nothing to pull
    with pytest.raises(ImageError):
        w.ensure_image(MISSING_IMAGE)
    assert w.image_obtainable(healthy) is None
    why = w.image_obtainable(MISSING_IMAGE)
    assert why is not None and why.startswith(f"image {MISSING_IMAGE} is not present locally and cannot be pulled")
    refs = {r for img in w.list_images() for r in img.references}
    assert healthy in refs and MISSING_IMAGE not in refs

    w.create_container(rig.request("blue", healthy))
    c = rig.fact(blue)
    assert c is not None
    assert c.image_id in w.image_ids_in_use()
    assert any(img.id == c.image_id for img in w.list_images() if healthy in img.references)
    # Never forced: an image a container uses stays, and the daemon's reason comes back.
    reason = w.remove_image(c.image_id)
    assert reason is not None and reason.startswith(f"conflict: unable to delete {c.image_id[7:19]} (cannot be forced) - image is being used by running container")
    assert healthy in {r for img in w.list_images() for r in img.references}

    # An image no container uses: removed, listed no more; removing it again (or any unknown id) is not an error.
    tag = f"bgtest-contract:{uuid.uuid4().hex[:10]}"
    client: Any = None
    if isinstance(w, FakeWorld):
        w.images[tag] = FakeImage()
    else:
        client = request.getfixturevalue("docker_client")
        repo, _, version = tag.partition(":")
        client.containers.get(blue).commit(repository=repo, tag=version)
    try:
        spare = next(img for img in w.list_images() if tag in img.references)
        assert spare.id != c.image_id and spare.id not in w.image_ids_in_use()
        assert w.remove_image(spare.id) is None
        assert tag not in {r for img in w.list_images() for r in img.references}
        assert w.remove_image(spare.id) is None
        assert w.remove_image("sha256:" + "0" * 64) is None
    finally:
        if client is not None:
            for img in client.images.list(name=tag.partition(":")[0]):
                client.images.remove(img.id, force=True)

    # connections_to: what a drain waits on, one established connection to the published port while it is open.
    pb = app.spec.ports.blue
    rig.eventually(lambda: w.probe_health(health_url(app, "blue"), 200, 2).ok, "blue healthy")
    assert w.connections_to(pb) == 0
    with socket.create_connection(("127.0.0.1", pb), timeout=2) if rig.kind == "host" else _held(w, pb):
        assert rig.eventually(lambda: w.connections_to(pb) == 1, "one connection counted")
    assert rig.eventually(lambda: w.connections_to(pb) == 0, "connection gone")
    w.remove_container(blue)


class _held:
    """The fake's side of an open client connection to `port` (FakeWorld.connections), for a `with`."""

    def __init__(self, w: World, port: int) -> None:
        assert isinstance(w, FakeWorld)
        self.w, self.port = w, port

    def __enter__(self) -> None:
        self.w.connections[self.port] = self.w.connections.get(self.port, 0) + 1

    def __exit__(self, *exc: object) -> None:
        self.w.connections[self.port] -= 1


# --------------------------------------------------------------------------------------------- access log


@pytest.mark.parametrize("kind", ["host", "fake"])
def test_access_log_contract(kind: str, tmp_path: Path) -> None:
    """access_log_end / read_access_log (post-switch verification): from a noted position, whole lines only."""
    from controller.drivers.host import HostWorld

    fake = FakeWorld()
    host = HostWorld()
    w: World = host if kind == "host" else fake
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()

    def append(*records: bytes, partial: bytes = b"") -> None:
        if kind == "fake":
            fake.log_access(log, *records, partial=partial)
        else:
            with log.open("ab") as f:
                f.write(b"".join(r + b"\n" for r in records) + partial)

    try:
        assert w.access_log_end(log) == LogPos(0, 0)
        missing = w.read_access_log(log, LogPos(0, 0))
        assert (missing.lines, missing.pos, missing.note) == ([], LogPos(0, 0), "access.log is missing or not a regular file")
        append(b"before")
        pos = w.access_log_end(log)  # the switch: what was logged before is not the new color's
        assert pos.inode != 0 and pos.offset == len(b"before\n")
        append(b'{"status":"200"}', b'{"status":"502"}', partial=b'{"sta')
        r = w.read_access_log(log, pos)
        assert (r.lines, r.pos, r.note) == ([b'{"status":"200"}', b'{"status":"502"}'], LogPos(pos.inode, pos.offset + 34), "")
        assert w.read_access_log(log, r.pos).lines == []  # the partial line waits
        append(b'tus":"504"}')
        r2 = w.read_access_log(log, r.pos)
        assert r2.lines == [b'{"status":"504"}'] and w.read_access_log(log, r2.pos).lines == []
        # Rotated with no copy to read on from (truncated in place; a new log): read from its start.
        if kind == "fake":
            fake.rotate_access_log(log)
        else:
            log.write_bytes(b"")
        append(b'{"status":"201"}')
        assert w.read_access_log(log, r2.pos).lines == [b'{"status":"201"}']
    finally:
        host.close()


# --------------------------------------------------------------------------------------------- accessories


@dataclass
class AccessoryRig:
    world: World
    name: str
    redis: str  # the Redis test image
    web: str  # an HTTP test image (the app's, serving /actuator/health on 8081)
    fake: FakeWorld | None


REDIS_CLI_PING = ["/usr/bin/redis-cli", "ping"]
FAILING = ["/bin/busybox", "sh", "-c", "echo bad; exit 3"]
ONEOFF_FAILS = ["/bin/busybox", "sh", "-c", "echo one; echo two; exit 3"]
ONEOFF_HANGS = ["/bin/busybox", "sleep", "30"]


@pytest.fixture(params=["fake", HOST_DOCKER])
def acc_rig(request: pytest.FixtureRequest) -> Iterator[AccessoryRig]:
    """The host one removes its containers, volume and networks afterwards (named after the rig)."""
    name = f"ctr{uuid.uuid4().hex[:8]}"
    if request.param == "fake":
        redis, web = "bgtest-redis:fake", "bgtest:v1"
        execs: dict[tuple[str, ...], tuple[int | None, str]] = {
            tuple(REDIS_CLI_PING): (0, "PONG\n"),
            tuple(FAILING): (3, "bad\n"),
            ("/bin/busybox", "true"): (0, ""),
            tuple(ONEOFF_FAILS): (3, "one\ntwo\n"),
            tuple(ONEOFF_HANGS): (None, ""),
        }
        fake = FakeWorld(images={redis: FakeImage(execs=execs, listens=(6379,)), web: FakeImage()})
        yield AccessoryRig(fake, name, redis, web, fake)
        return
    from controller.drivers.host import HostWorld
    from tests.support.redis_image import RedisImageUnavailable, build_redis_image

    client: Any = request.getfixturevalue("docker_client")
    images: dict[str, str] = request.getfixturevalue("test_images")
    try:
        redis = build_redis_image(client)
    except RedisImageUnavailable as e:
        pytest.skip(str(e))
    world = HostWorld()
    try:
        yield AccessoryRig(world, name, redis, images["v1"], None)
    finally:
        world.close()
        for c in client.containers.list(all=True, filters={"name": name}):
            c.remove(force=True)
        for v in client.volumes.list(filters={"name": name}):
            v.remove(force=True)
        for n in client.networks.list(names=[f"{name}-net", f"{name}-net2"]):
            n.remove()


def _eventually(w: World, fn: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    deadline = w.now() + timeout
    for _ in range(2000):
        value = fn()
        if value or w.now() >= deadline:
            break
        w.sleep(0.1)
    assert value, f"{what} not met within {timeout:g}s (last: {value!r})"
    return value


def test_accessory_contract(acc_rig: AccessoryRig) -> None:
    """Containers by name, volumes, networks, one-offs and the three accessory checks (issue 13)."""
    w, name = acc_rig.world, acc_rig.name
    net, net2, vol, web = f"{name}-net", f"{name}-net2", f"{name}-data", f"{name}-web"
    own = {LABEL_MANAGED: MANAGED_BY, LABEL_ACCESSORY: name}
    port, web_port = free_port(), free_port()
    req = AccessoryRequest(
        name=name,
        image=acc_rig.redis,
        labels=own,
        env={"A": "1"},
        ports={6379: port},
        host_ip="127.0.0.1",
        volumes={vol: "/data"},
        command=["/usr/bin/redis-server", "--dir", "/data"],
        network=net,
        aliases=(name,),
    )
    # A missing network: the create fails and leaves no container.
    with pytest.raises(DockerError):
        w.create_container(req)
    assert [c.name for c in w.list_accessories(frozenset({name})) if c.name == name] == []
    assert w.run_state(name) is None

    assert net not in w.list_networks()
    w.create_network(net, own)
    assert net in w.list_networks()
    with pytest.raises(DockerError):
        w.create_network(net, own)  # a second network of that name is refused, not made twice
    w.create_volume(vol, own)
    w.create_volume(vol, own)  # creating an existing volume is a no-op
    assert vol in w.list_volumes()

    w.create_container(req)
    (fact,) = [a for a in w.list_accessories(frozenset({name})) if a.name == name]
    assert fact.ours(name) and fact.running and fact.networks == (net,) and fact.image == acc_rig.redis
    assert fact.mounts == ((vol, "/data"),) and fact.anonymous_volumes({}) == {}
    assert w.image_volumes(acc_rig.redis) == () and w.image_volumes(f"{name}-absent:1") is None  # (it declares no VOLUME)
    assert all(c.name != name for c in w.list_containers())  # not an app's container
    with pytest.raises(DockerError):
        w.create_container(req)  # the name is taken

    # check_command runs its argv in the container: the answer is that command's.
    assert _eventually(w, lambda: w.check_command(name, REDIS_CLI_PING, 2).ok, "redis answers PONG")
    assert w.check_command(name, REDIS_CLI_PING, 2).detail == "exit 0: PONG"
    failed = w.check_command(name, FAILING, 2)
    assert (failed.ok, failed.detail) == (False, "exit 3: bad")
    missing = w.check_command(name, ["nope"], 2)
    assert not missing.ok and missing.detail.startswith("exit 126: ") and "executable file not found" in missing.detail

    # check_tcp: the container's address on its network, or a published port on the host.
    tcp = w.check_tcp(name, net, None, 6379, 2)
    assert tcp.ok and tcp.detail.endswith(":6379 accepts")
    closed = w.check_tcp(name, net, None, 6380, 2)
    assert not closed.ok and closed.detail.endswith(":6380: Connection refused")
    assert w.check_tcp(name, None, "127.0.0.1", port, 2) == w.check_tcp(name, net, "127.0.0.1", port, 2)
    assert w.check_tcp(name, None, "127.0.0.1", port, 2).detail == f"127.0.0.1:{port} accepts"
    assert w.check_tcp(name, "bridge", None, 6379, 2).detail == "no address"  # not on that network

    # check_http against an HTTP accessory (the app test image), by network address and by published port.
    w.create_container(AccessoryRequest(web, acc_rig.web, {**own, LABEL_ACCESSORY: web}, {}, {8081: web_port}, "127.0.0.1", {}, None, net, (web,)))
    assert _eventually(w, lambda: w.check_http(web, net, None, 8081, "/actuator/health", 200, 2).ok, "web healthy")
    assert w.check_http(web, net, None, 8081, "/actuator/health", 200, 2).detail == "HTTP 200 UP"
    assert w.check_http(web, None, "127.0.0.1", web_port, "/actuator/health", 200, 2).detail == "HTTP 200 UP"
    wrong = w.check_http(web, net, None, 8081, "/actuator/health", 201, 2)
    assert (wrong.ok, wrong.detail) == (False, "HTTP 200")
    refused = w.check_http(name, net, None, 6380, "/", 200, 2)
    assert (refused.ok, refused.detail) == (False, "connection refused")

    # connect_network: a second network; joining twice is a no-op; a missing network or container is refused.
    w.create_network(net2, own)
    w.connect_network(net2, web, (web,))
    w.connect_network(net2, web, (web,))
    (wf,) = [a for a in w.list_accessories(frozenset({web})) if a.name == web]
    assert wf.networks == tuple(sorted((net, net2)))
    assert _eventually(w, lambda: w.check_tcp(web, net2, None, 8081, 2).ok, "web reachable on the second network")
    with pytest.raises(DockerError):
        w.connect_network(f"{name}-nonet", web, ())
    with pytest.raises(DockerError):
        w.connect_network(net2, f"{name}-nobody", ())
    w.remove_container(web)

    # Stopped: listed as exited, no check passes.
    w.stop_container(name, 5)
    (fact,) = [a for a in w.list_accessories(frozenset({name})) if a.name == name]
    assert not fact.running and fact.state == "exited"
    stopped = w.check_command(name, REDIS_CLI_PING, 2)
    assert not stopped.ok and stopped.detail.startswith(f"exec in {name}: Container ") and stopped.detail.endswith(" is not running")
    assert w.check_tcp(name, net, None, 6379, 2).detail == "no address"
    # Renamed aside (a recreate's retired container): still listed by its label, with its volumes.
    retired = f"{name}-retired"
    w.rename_container(name, retired)
    assert [(a.name, a.mounts) for a in w.list_accessories(frozenset({name})) if a.name.startswith(name)] == [(retired, ((vol, "/data"),))]
    with pytest.raises(DockerError):
        w.rename_container(name, f"{name}-other")  # no container of that name any more
    w.rename_container(retired, name)
    w.start_container(name)
    assert _eventually(w, lambda: w.check_command(name, REDIS_CLI_PING, 2).ok, "redis back")

    # One-offs: the exit code and last output line; removed when they end, also at their timeout.
    oneoff = f"{name}-backup"
    labels = {**own, LABEL_ONEOFF: "backup"}

    def job(command: list[str]) -> OneOff:
        return OneOff(oneoff, acc_rig.redis, command, {vol: "/data"}, labels, {"B": "2"}, net)

    ok = w.run_oneoff(job(["/bin/busybox", "true"]), 20)
    assert (ok.exit_code, ok.output) == (0, "")
    bad = w.run_oneoff(job(ONEOFF_FAILS), 20)
    assert (bad.exit_code, bad.output) == (3, "two")
    hung = w.run_oneoff(job(ONEOFF_HANGS), 1)
    assert (hung.exit_code, hung.output) == (None, "timed out after 1s")
    with pytest.raises(DockerError):
        w.run_oneoff(job(["/no/such/binary"]), 20)  # it cannot start
    assert w.run_state(oneoff) is None  # none of them is left behind
    assert [c.name for c in w.list_accessories(frozenset({name, oneoff})) if c.name.startswith(name)] == [name]

    w.remove_container(name)
    assert [a for a in w.list_accessories(frozenset({name})) if a.name == name] == []
    assert vol in w.list_volumes()  # removing the container never removes its volume
    w.remove_container(name)  # removing a missing container is fine


# --------------------------------------------------------------------------------------------- the meta-test


def _world_methods() -> set[str]:
    return {n for n, v in vars(World).items() if callable(v) and not n.startswith("_")}


def test_every_world_method_is_exercised_here() -> None:
    """A method added to World must be called by this contract (on both worlds), and both worlds must have it."""
    from controller.drivers.host import HostWorld

    tree = ast.parse(Path(__file__).read_text())
    called = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    methods = _world_methods()
    assert len(methods) > 30, sorted(methods)  # the protocol as read here, not an empty set
    assert sorted(methods - called) == []
    assert [m for m in sorted(methods) if not callable(getattr(FakeWorld, m, None)) or not callable(getattr(HostWorld, m, None))] == []
