"""Bad-input catalogue: every case runs the real CLI (`python -m controller`) as a subprocess.

Each case checks
- the message: exactly one `reconcile: ...` line on stderr per problem, naming it; nothing else on
  stderr but JSON log lines; no traceback anywhere;
- the documented exit code (docs/spec.md: 2 invalid input; --once 1 / --plan 2 when the host fails);
- that nothing changed: no container labelled for the app (asked of the real dockerd), no include and no
  marker written, and the state dir not even created (or, where a run legitimately takes the lock,
  nothing in it but the lock).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.factories import app_doc
from tests.support.containers import LABEL_APP, remove_containers

ROOT = Path(__file__).resolve().parent.parent

Doc = dict[str, Any]


@dataclass
class Env:
    """Where one case's files live; all under the test's tmp_path."""

    tmp: Path
    name: str

    @property
    def specs(self) -> Path:
        return self.tmp / "specs"

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    @property
    def marker(self) -> Path:
        return self.tmp / "run" / self.name / "active"

    @property
    def include(self) -> Path:
        return self.tmp / "nginx" / f"{self.name}.upstream.conf"

    def doc(self, name: str | None = None, **spec: Any) -> Doc:
        """A valid spec whose every path is under tmp; Nginx's control URL points at a closed port."""
        n = name or self.name
        base: Doc = {
            "image": "bgtest:v1",
            "ports": {"blue": 18581, "green": 18582},
            "marker": str(self.tmp / "run" / n / "active"),
            "labels": {"bluegreen.test": "bad-input"},
            "nginx": {
                "upstreamFile": str(self.tmp / "nginx" / f"{n}.upstream.conf"),
                "testCommand": ["nginx", "-t"],
                "reloadCommand": ["nginx", "-s", "reload"],
                "controlUrl": "http://127.0.0.1:9",
            },
        }
        return app_doc(n, **{**base, **spec})

    def write(self, content: str | Doc, filename: str | None = None) -> Path:
        self.specs.mkdir(parents=True, exist_ok=True)
        path = self.specs / (filename or f"{self.name}.yaml")
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path


def mutate(fn: Callable[[Doc], None]) -> Callable[[Env], Path]:
    def setup(e: Env) -> Path:
        d = e.doc()
        fn(d)
        return e.write(d)

    return setup


def text(content: str) -> Callable[[Env], Path]:
    return lambda e: e.write(content)


def valid(e: Env) -> Path:
    return e.write(e.doc())


@dataclass
class Case:
    id: str
    setup: Callable[[Env], Path]  # writes what -f points at; returns that path
    needles: list[str]  # one per expected stderr problem line, in order (case-insensitive substrings)
    code: int = 2
    mode: str = "--once"
    args: list[str] = field(default_factory=list)  # extra arguments; "{spec}", "{state}", "{tmp}" expanded
    env: dict[str, str] = field(default_factory=dict)
    no_f: bool = False  # do not pass -f
    lock_only: bool = False  # the run may create the state dir's lock (and cache its valid spec), nothing else


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def fn(d: Doc) -> None:
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[p]
        node[last] = value

    return fn


def _del(path: str) -> Callable[[Doc], None]:
    def fn(d: Doc) -> None:
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[p]
        del node[last]

    return fn


def _two_apps(second: Callable[[Env], Doc]) -> Callable[[Env], Path]:
    """Two specs in one directory that fight over one resource: both are refused, nothing is done."""

    def setup(e: Env) -> Path:
        a = e.doc()
        b = e.doc(f"{e.name}-b", ports={"blue": 18591, "green": 18592})
        b["spec"].update(second(e))
        e.write(a)
        e.write(b, f"{e.name}-b.yaml")
        return e.specs

    return setup


def _empty_dir(e: Env) -> Path:
    e.specs.mkdir(parents=True)
    (e.specs / "README.md").write_text("not a spec\n")
    return e.specs


def _not_executable(e: Env) -> Path:
    script = e.tmp / "bin" / "nginx"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    d = e.doc()
    d["spec"]["nginx"]["reloadCommand"] = [str(script), "-s", "reload"]
    return e.write(d)


def _duplicate_key(e: Env) -> Path:
    # YAML itself keeps the last value silently: the operator would deploy v2 believing v1 is set.
    return e.write(
        f"apiVersion: bluegreen/v1\nkind: BlueGreenApp\nmetadata:\n  name: {e.name}\nspec:\n"
        "  image: bgtest:v1\n  activeColor: blue\n  image: bgtest:v2\n"
    )


def _duplicate_env_key(e: Env) -> Path:
    return e.write(
        f"apiVersion: bluegreen/v1\nkind: BlueGreenApp\nmetadata:\n  name: {e.name}\nspec:\n"
        "  image: bgtest:v1\n  activeColor: blue\n  env:\n    A: '1'\n    A: '2'\n"
    )


# ~1 KB that expands to 10^5 nodes (each level repeats the one above ten times).
_ALIAS_BOMB = "apiVersion: bluegreen/v1\nkind: BlueGreenApp\nx0: &x0 [a, a, a, a, a, a, a, a, a, a]\n" + "".join(
    f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]\n" for i in range(1, 5)
)


def _flag(path: Callable[[Env], str]) -> Callable[[Env], Path]:
    return lambda e: e.write(e.doc(nginx={**e.doc()["spec"]["nginx"], "flagFile": path(e)}))


def _env_file(path: Callable[[Env], str]) -> Callable[[Env], Path]:
    return lambda e: e.write(e.doc(secrets={"ssm": {"path": "/app/", "region": "us-east-1"}, "envFile": path(e)}))


def _under_a_file(e: Env) -> Path:
    (e.tmp / "regular-file").write_text("x\n")
    return valid(e)


CASES = [
    # YAML and document shape
    Case("invalid-yaml", text("apiVersion: bluegreen/v1\nkind: [BlueGreenApp\n"), ["invalid yaml"]),
    Case("not-a-mapping", text("- apiVersion: bluegreen/v1\n- kind: BlueGreenApp\n"), ["expected a bluegreenapp mapping, got list"]),
    Case("empty-file", text(""), ["empty"]),
    Case("wrong-apiVersion", mutate(_set("apiVersion", "bluegreen/v2")), ["apiversion: input should be 'bluegreen/v1'"]),
    Case("wrong-kind", mutate(_set("kind", "Deployment")), ["kind: input should be 'bluegreenapp'"]),
    Case("unknown-top-level-field", mutate(_set("status", {"x": 1})), ["status: unknown field"]),
    Case("unknown-nested-field", mutate(_set("spec.healthCheck.timeout", 5)), ["spec.healthcheck.timeout: unknown field"]),
    Case("typo-in-spec-field", mutate(_set("spec.activecolor", "blue")), ["spec.activecolor: unknown field"]),
    Case("missing-metadata", mutate(_del("metadata")), ["metadata: required field missing"]),
    Case("spec-not-a-mapping", mutate(_set("spec", "dialogue:1")), ["spec: input should be a valid dictionary"]),
    # metadata and spec fields
    Case("bad-name", mutate(_set("metadata.name", "Dialogue_App")), ["metadata.name: string should match pattern"]),
    Case("missing-image", mutate(_del("spec.image")), ["spec.image: required field missing"]),
    Case("invalid-image-reference", mutate(_set("spec.image", "Dialogue::1.4")), ["spec.image: 'dialogue::1.4' is not a valid image reference"]),
    Case("bad-activeColor", mutate(_set("spec.activeColor", "red")), ["spec.activecolor: input should be 'blue' or 'green'"]),
    Case("port-0", mutate(_set("spec.ports.blue", 0)), ["spec.ports.blue: input should be greater than or equal to 1"]),
    Case("port-70000", mutate(_set("spec.ports.green", 70000)), ["spec.ports.green: input should be less than or equal to 65535"]),
    Case("port-string", mutate(_set("spec.ports.blue", "http")), ["spec.ports.blue: input should be a valid integer"]),
    Case("containerPort-0", mutate(_set("spec.containerPort", 0)), ["spec.containerport: input should be greater than or equal to 1"]),
    Case("ports-equal", mutate(_set("spec.ports", {"blue": 18581, "green": 18581})), ["spec.ports: ports.blue and ports.green must differ"]),
    Case("bad-bindAddress", mutate(_set("spec.bindAddress", "localhost")), ["spec.bindaddress: 'localhost' is not an ip address"]),
    # a non-loopback bindAddress publishes the app past Nginx's Basic Auth and past ufw: opt-in only
    Case("bindAddress-any-v4-without-opt-in", mutate(_set("spec.bindAddress", "0.0.0.0")), ["bindaddress 0.0.0.0 is not a loopback address"]),
    Case("bindAddress-any-v6-without-opt-in", mutate(_set("spec.bindAddress", "0:0:0:0:0:0:0:0")), ["bindaddress :: is not a loopback address"]),
    Case("bindAddress-lan-without-opt-in", mutate(_set("spec.bindAddress", "192.168.1.10")), ["past ufw/iptables input rules; set exposebeyondloopback: true"]),
    Case("exposeBeyondLoopback-not-a-bool", mutate(_set("spec.exposeBeyondLoopback", "please")), ["spec.exposebeyondloopback: input should be a valid boolean"]),
    # networks where nothing is published on bindAddress (host was retried forever as "daemon unreachable")
    Case("network-host", mutate(_set("spec.network", "host")), ["spec.network: 'host' is not allowed: the app must publish its port"]),
    Case("network-none", mutate(_set("spec.network", "none")), ["spec.network: 'none' is not allowed"]),
    Case("network-container", mutate(_set("spec.network", "container:db")), ["spec.network: 'container:db' is not allowed"]),
    Case("network-bad-name", mutate(_set("spec.network", "my net")), ["spec.network: string should match pattern"]),
    # env: null is not "", a NUL cannot be passed
    Case("env-null-value", mutate(_set("spec.env", {"A": None})), ["spec.env: env a has no value (yaml null): write '' for an empty string"]),
    Case("env-nul-byte", mutate(_set("spec.env", {"A": "x\x00y"})), ["spec.env: env a contains a nul byte"]),
    Case("testCommand-nul-byte", mutate(_set("spec.nginx.testCommand", ["nginx\x00", "-t"])), ["spec.nginx.testcommand: 'nginx\\x00' contains a nul byte"]),
    Case("env-list-value", mutate(_set("spec.env", {"JAVA_OPTS": ["-Xmx1g"]})), ["spec.env: env java_opts must be a string"]),
    Case("env-bad-name", mutate(_set("spec.env", {"SPRING-PROFILE": "prod"})), ["spec.env: 'spring-profile' is not a valid environment variable name"]),
    Case("env-reserved-prefix", mutate(_set("spec.env", {"BLUEGREEN_COLOR": "red"})), ["spec.env: bluegreen_color is reserved"]),
    Case("reserved-label", mutate(_set("spec.labels", {"bluegreen.color": "red"})), ["spec.labels: label 'bluegreen.color' is reserved"]),
    Case("healthCheck-path-without-slash", mutate(_set("spec.healthCheck.path", "actuator/health")), ["spec.healthcheck.path: 'actuator/health' must start with /"]),
    # healthCheck.path is a URL path: a tab used to reach httpx and fail every pass with InvalidURL
    Case("healthCheck-path-tab", mutate(_set("spec.healthCheck.path", "/actuator/\thealth")), ["spec.healthcheck.path: '/actuator/\\thealth' is not a url path: it contains '\\t'"]),
    Case("healthCheck-path-space", mutate(_set("spec.healthCheck.path", "/health now")), ["spec.healthcheck.path: '/health now' is not a url path: it contains ' '"]),
    Case("healthCheck-path-non-ascii", mutate(_set("spec.healthCheck.path", "/h\u00e9alth")), ["is not a url path: it contains '\\xe9'"]),
    Case("healthCheck-path-bad-escape", mutate(_set("spec.healthCheck.path", "/health%zz")), ["has a '%' not followed by two hex digits"]),
    Case("negative-timeout", mutate(_set("spec.healthCheck.timeoutSeconds", -5)), ["spec.healthcheck.timeoutseconds: input should be greater than 0"]),
    Case("expectStatus-999", mutate(_set("spec.healthCheck.expectStatus", 999)), ["spec.healthcheck.expectstatus: input should be less than or equal to 599"]),
    Case("standby-bogus", mutate(_set("spec.standby", "sleep")), ["spec.standby: input should be 'keep' or 'stop'"]),
    Case("empty-testCommand", mutate(_set("spec.nginx.testCommand", [])), ["spec.nginx.testcommand: list should have at least 1 item"]),
    Case("controlUrl-not-http", mutate(_set("spec.nginx.controlUrl", "127.0.0.1:8099")), ["spec.nginx.controlurl: string should match pattern"]),
    # YAML that used to be accepted, or to take every other app down with it
    Case("yaml-duplicate-key", _duplicate_key, ["line 8 column 3: invalid yaml: duplicate key 'image' (first on line 6)"]),
    Case("yaml-duplicate-env-key", _duplicate_env_key, ["invalid yaml: duplicate key 'a' (first on line"]),
    Case("yaml-deeply-nested", text("apiVersion: bluegreen/v1\nkind: " + "[" * 600 + "]" * 600 + "\n"), ["line 2 column 38: invalid yaml: nested deeper than 32 levels"]),
    Case("yaml-alias-bomb", text(_ALIAS_BOMB), ["invalid yaml: more than 20000 yaml nodes once aliases are expanded"]),
    Case("yaml-recursive-alias", text("apiVersion: bluegreen/v1\nkind: &k [*k]\n"), ["invalid yaml: more than 20000 yaml nodes"]),
    # paths the controller writes: absolute, normalised, characters Nginx cannot misparse, distinct
    Case("marker-relative", mutate(_set("spec.marker", "run/active")), ["spec.marker: 'run/active' must be an absolute path"]),
    Case("marker-dotdot", lambda e: e.write(e.doc(marker=f"{e.tmp}/run/../active")), ["spec.marker: '{tmp}/run/../active' is not a normalised absolute path"]),
    Case("marker-double-slash", lambda e: e.write(e.doc(marker=f"{e.tmp}/run//active")), ["is not a normalised absolute path"]),
    Case("marker-trailing-slash", lambda e: e.write(e.doc(marker=f"{e.tmp}/run/active/")), ["is not a normalised absolute path"]),
    Case("flagFile-newline-injection", _flag(lambda e: f"{e.tmp}/nginx/x.green\n}}\nserver {{ listen 0.0.0.0:80; }}"), ["spec.nginx.flagfile: '{tmp}/nginx/x.green\\n}\\nserver { listen 0.0.0.0:80; }' contains '\\n'"]),
    Case("flagFile-semicolon", _flag(lambda e: f"{e.tmp}/nginx/x;green"), ["spec.nginx.flagfile: '{tmp}/nginx/x;green' contains ';'"]),
    Case("flagFile-dollar", _flag(lambda e: f"{e.tmp}/nginx/$host.green"), ["contains '$'"]),
    Case("upstreamFile-brace", mutate(_set("spec.nginx.upstreamFile", "/tmp/x{.conf")), ["spec.nginx.upstreamfile: '/tmp/x{.conf' contains '{'"]),
    Case("upstreamFile-quote", mutate(_set("spec.nginx.upstreamFile", "/tmp/x'.conf")), ["spec.nginx.upstreamfile: \"/tmp/x'.conf\" contains \"'\""]),
    Case("envFile-space", _env_file(lambda e: f"{e.tmp}/run/app env"), ["spec.secrets.envfile: '{tmp}/run/app env' contains ' '"]),
    Case("marker-is-flagFile", lambda e: e.write(e.doc(marker=str(e.include.parent / f"{e.name}.green"))), ["spec.marker and spec.nginx.flagfile are both"]),
    Case("marker-is-upstreamFile", lambda e: e.write(e.doc(marker=str(e.include))), ["spec.marker and spec.nginx.upstreamfile are both"]),
    Case("flagFile-is-upstreamFile", _flag(lambda e: str(e.include)), ["spec.nginx.upstreamfile and spec.nginx.flagfile are both"]),
    Case("envFile-is-marker", _env_file(lambda e: str(e.marker)), ["spec.marker and spec.secrets.envfile are both"]),
    Case("marker-under-upstreamFile", lambda e: e.write(e.doc(marker=f"{e.include}/active")), ["spec.marker ({tmp}/nginx/{name}.upstream.conf/active) is under spec.nginx.upstreamfile"]),
    # files and directories
    Case("nonexistent-path", lambda e: e.tmp / "nope.yaml", ["nope.yaml: no such file or directory"]),
    Case("directory-without-specs", _empty_dir, ["no *.yaml spec found"]),
    Case("two-specs-same-port", _two_apps(lambda e: {"ports": {"blue": 18581, "green": 18592}}), ["both use port 127.0.0.1:18581"]),  # one line per conflict
    Case(
        "two-specs-same-marker",
        _two_apps(lambda e: {"marker": str(e.marker)}),
        ["both use marker"],
    ),
    # command line
    Case("docker-url-bad-port", valid, ["docker url tcp://127.0.0.1:abc: invalid"], args=["--docker-url", "tcp://127.0.0.1:abc"], lock_only=True),
    Case("unknown-flag", valid, ["unrecognized arguments: --frobnicate"], args=["--frobnicate"]),
    Case("once-and-plan", valid, ["not allowed with argument"], args=["--plan"]),
    Case("missing-f", valid, ["-f PATH or --git-url URL is required"], no_f=True),
    Case("no-mode", valid, ["one of the arguments --once --plan"], mode=""),
    Case("lock-timeout-not-a-number", valid, ["--lock-timeout: 'soon' is not a number"], args=["--lock-timeout", "soon"]),
    Case("lock-timeout-negative", valid, ["--lock-timeout"], args=["--lock-timeout=-3"]),
    Case("backoff-zero", valid, ["--backoff-base"], args=["--backoff-base", "0"]),
    # the host
    Case(
        "docker-unreachable-once",
        valid,
        ["docker daemon unreachable"],
        code=1,
        env={"DOCKER_HOST": "unix:///nonexistent.sock"},
        lock_only=True,
    ),
    Case("docker-unreachable-plan", valid, ["docker daemon unreachable"], code=2, mode="--plan", env={"DOCKER_HOST": "unix:///nonexistent.sock"}),
    Case(
        "nginx-testCommand-not-found",
        mutate(_set("spec.nginx.testCommand", ["nginx-does-not-exist", "-t"])),
        ["nginx.testcommand: nginx-does-not-exist: command not found"],
    ),
    Case(
        "nginx-reloadCommand-not-executable",
        _not_executable,
        ["bin/nginx: command not found"],
        mode="--plan",
    ),
    Case("state-dir-relative", valid, ["argument --state-dir: 'state' must be an absolute path"], args=["--state-dir", "state"]),
    Case("state-dir-dotdot", valid, ["argument --state-dir: '{tmp}/made/../state' is not a normalised absolute path"], args=["--state-dir", "{tmp}/made/../state"]),
    Case("state-dir-newline", valid, ["argument --state-dir: '{tmp}/sta\\nte' contains '\\n'"], args=["--state-dir", "{tmp}/sta\nte"]),
    Case("state-dir-under-a-file-once", _under_a_file, ["regular-file/state/lock: not a directory"], code=1, args=["--state-dir", "{tmp}/regular-file/state"]),
    Case("state-dir-under-a-file-plan", _under_a_file, ["not a directory"], code=2, mode="--plan", args=["--state-dir", "{tmp}/regular-file/state"]),
]


def test_the_catalogue_is_big_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


def _run(case: Case, e: Env, target: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "controller"]
    if case.mode:
        argv.append(case.mode)
    if not case.no_f:
        argv += ["-f", str(target)]
    if not any(a.startswith("--state-dir") for a in case.args):
        argv += ["--state-dir", str(e.state)]
    argv += [a.format(spec=target, state=e.state, tmp=e.tmp) for a in case.args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_")}
    env.update(case.env)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, check=False)


@dataclass
class Ran:
    env: Env
    proc: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[dict[str, Ran]]:
    """Every case's CLI run, several at a time (each is a fresh interpreter: ~1 s of imports)."""
    root = tmp_path_factory.mktemp("bad-input")
    prepared = []
    for c in CASES:
        e = Env(root / c.id, f"t{uuid.uuid4().hex[:8]}")
        e.tmp.mkdir()
        prepared.append((c, e, c.setup(e)))
    with ThreadPoolExecutor(max_workers=4) as pool:
        procs = list(pool.map(lambda args: _run(*args), prepared))
    yield {c.id: Ran(e, p) for (c, e, _), p in zip(prepared, procs, strict=True)}
    remove_containers(docker_client, [{"label": f"{LABEL_APP}={e.name}{s}"} for _, e, _ in prepared for s in ("", "-b")])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ran: dict[str, Ran], docker_client: Any) -> None:
    e, p = ran[case.id].env, ran[case.id].proc
    app_name, tmp_path = e.name, e.tmp
    out = p.stdout + p.stderr

    # The message: one line per problem, naming it; log lines aside; never a traceback.
    assert "Traceback" not in out, out
    assert "internal error" not in out, out
    problems = []
    for line in p.stderr.splitlines():
        if line.startswith("{"):
            json.loads(line)  # a structlog JSON line, not a message
            continue
        problems.append(line)
    assert len(problems) == len(case.needles), p.stderr
    for line, needle in zip(problems, case.needles, strict=True):
        needle = needle.replace("{tmp}", str(e.tmp)).replace("{name}", e.name)
        assert line.startswith("reconcile: "), line
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    assert p.returncode == case.code, p.stderr

    # Nothing changed.
    for name in (app_name, f"{app_name}-b"):
        found = docker_client.containers.list(all=True, filters={"label": f"bluegreen.app={name}"})
        assert found == [], f"containers created for {name}: {[c.name for c in found]}"
        for color in ("blue", "green"):
            assert docker_client.containers.list(all=True, filters={"name": f"^{name}-{color}$"}) == []
    assert not e.include.exists() and not (tmp_path / "nginx").exists()
    assert not e.marker.exists() and not (tmp_path / "run").exists()
    assert _state_written(e.state) in (([], ["lock"]) if case.lock_only else ([],)), list(e.state.rglob("*"))


def _state_written(state: Path) -> list[str]:
    """What a run wrote in the state dir, but the spec cache's entries (controller/spec/cache.py): a valid spec put in
    force is cached before the host refuses the run (Docker unreachable, say); that is no state of an app."""
    cache = ("cache", "cache/specs")
    return [n for n in sorted(str(p.relative_to(state)) for p in state.rglob("*")) if n not in cache and not n.startswith("cache/specs/")]


def test_one_broken_spec_does_not_hide_the_other_problems(tmp_path: Path, app_name: str, docker_client: Any) -> None:
    """Two broken files in one directory: one line each, exit 2, still nothing changed."""
    e = Env(tmp_path, app_name)
    e.write("kind: [\n", "a.yaml")
    bad = e.doc()
    bad["spec"]["activeColor"] = "purple"
    e.write(bad, "b.yaml")
    p = _run(Case("two", lambda _e: e.specs, []), e, e.specs)
    lines = [ln for ln in p.stderr.splitlines() if not ln.startswith("{")]
    assert p.returncode == 2
    assert len(lines) == 2, p.stderr
    assert "a.yaml" in lines[0] and "invalid YAML" in lines[0]
    assert "b.yaml" in lines[1] and "activeColor" in lines[1]
    assert "Traceback" not in p.stdout + p.stderr
    assert docker_client.containers.list(all=True, filters={"label": f"bluegreen.app={app_name}"}) == []
    assert not e.state.exists()
