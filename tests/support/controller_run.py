"""Drive the real controller (`python -m controller`) as a subprocess against real Docker and a real nginx.

Helpers for the `tests/test_real_*.py` integration tests:

- `app_spec(app, nginx, tmp_path, image, active, ...)` a spec document for the `nginx` fixture: free host
  ports, marker under tmp_path, nginx.upstreamFile / testCommand / reloadCommand / controlUrl from the
  instance, the session's `bluegreen.test` label, fast health checks.
- `run_reconcile(spec, state_dir, *args)` runs `python -m controller <args> -f spec --state-dir state_dir`
  and returns the CompletedProcess (text, with `.elapsed` seconds); `start_reconcile` returns the Popen.
- `Traffic` a bounded background loop probing a public URL through nginx, recording every answer.
- `Snapshot` what a pass may change: container ids, include/marker content and mtimes, nginx workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from .containers import LABEL_TEST
from .net import free_port
from .nginx import NginxInstance, settle_running
from .wait import wait_until

ROOT = Path(__file__).resolve().parent.parent.parent


def _reload_mode() -> dict[str, str]:
    """The issue's switch (rewrite the include, test, reload) for the plain site of tests/support/nginx.py."""
    from controller.spec.app import NginxSpec

    return {"switch": "reload"} if "switch" in NginxSpec.model_fields else {}


_RELOAD_MODE = _reload_mode()


def _keep_test_images() -> dict[str, int]:
    """Pruning off for the shared `bgtest:*` images (every test's repository): keep them all."""
    from controller.spec.app import AppSpec

    return {"keepImages": 10_000} if "keepImages" in AppSpec.model_fields else {}


KEEP_TEST_IMAGES = _keep_test_images()


def app_spec(
    app: str,
    nginx: NginxInstance,
    tmp_path: Path,
    image: str,
    active: str,
    *,
    session_id: str,
    ports: dict[str, int] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A BlueGreenApp document wired to `nginx`; keyword arguments override (dicts are merged one level)."""
    body: dict[str, Any] = {
        "image": image,
        "activeColor": active,
        "containerPort": 8081,
        "ports": ports or {"blue": free_port(), "green": free_port()},
        "healthCheck": {
            "path": "/actuator/health",
            "intervalSeconds": 0.2,
            "timeoutSeconds": 10,
            "requestTimeoutSeconds": 1,
        },
        "standby": "keep",
        "drainSeconds": 0,
        "stopTimeoutSeconds": 1,
        "marker": str(tmp_path / "state" / app / "active"),
        "nginx": {
            "upstreamFile": str(nginx.upstream_file(app)),
            "testCommand": nginx.test_command,
            "reloadCommand": nginx.reload_command,
            "controlUrl": nginx.control_url,
            "verifyTimeoutSeconds": 5,
            "commandTimeoutSeconds": 20,
            **_RELOAD_MODE,
        },
        "labels": {LABEL_TEST: session_id},
        **KEEP_TEST_IMAGES,
    }
    for k, v in spec.items():
        if isinstance(v, dict) and isinstance(body.get(k), dict):
            body[k] = {**body[k], **v}
        else:
            body[k] = v
    return {"apiVersion": "bluegreen/v1", "kind": "BlueGreenApp", "metadata": {"name": app}, "spec": body}


def write_spec(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def with_spec(doc: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A copy of `doc` with spec fields replaced (dicts merged one level)."""
    body = dict(doc["spec"])
    for k, v in spec.items():
        body[k] = {**body[k], **v} if isinstance(v, dict) and isinstance(body.get(k), dict) else v
    return {**doc, "spec": body}


def subprocess_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("BLUEGREEN_DEBUG", None)
    env.pop("BLUEGREEN_STATE_DIR", None)
    env.update(extra or {})
    return env


def command(spec: Path, state_dir: Path, *args: str) -> list[str]:
    mode = [] if any(a in ("--once", "--plan", "--status", "--watch", "--schema") for a in args) else ["--once"]
    return [sys.executable, "-m", "controller", *mode, *args, "-f", str(spec), "--state-dir", str(state_dir)]


def json_lines(text: str) -> list[dict[str, Any]]:
    """The lines of a controller's stderr that are JSON objects (structlog's), in order; a line being written is skipped."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


class Run(subprocess.CompletedProcess[str]):
    elapsed: float = 0.0

    def logs(self) -> list[dict[str, Any]]:
        """stderr lines that are JSON objects (structlog's), in order."""
        return json_lines(self.stderr)

    def messages(self) -> list[str]:
        """stderr lines that are not JSON log lines: the one-line errors meant for people (cron mail)."""
        return [ln for ln in self.stderr.splitlines() if ln.strip() and not ln.startswith("{")]

    def explain(self) -> str:
        return f"exit {self.returncode} after {self.elapsed:.1f}s\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr[-6000:]}"


def run_reconcile(
    spec: Path, state_dir: Path, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
) -> Run:
    """`python -m controller [--once] *args -f spec --state-dir state_dir` to completion (bounded by timeout)."""
    argv = command(spec, state_dir, *args)
    started = time.monotonic()
    p = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=subprocess_env(env), cwd=str(ROOT), stdin=subprocess.DEVNULL
    )
    run = Run(p.args, p.returncode, p.stdout, p.stderr)
    run.elapsed = time.monotonic() - started
    settle_running()  # a reload by the run: its old workers told to go before the test looks at the site
    return run


def start_reconcile(
    spec: Path, state_dir: Path, *args: str, env: dict[str, str] | None = None, stderr_path: Path | None = None
) -> subprocess.Popen[str]:
    """Start a run in the background; stderr goes to `stderr_path` (or is discarded)."""
    argv = command(spec, state_dir, *args)
    err = open(stderr_path, "w") if stderr_path else subprocess.DEVNULL  # noqa: SIM115 (kept by Popen)
    try:
        return subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=err, text=True, env=subprocess_env(env), cwd=str(ROOT), stdin=subprocess.DEVNULL
        )
    finally:
        if stderr_path:
            err.close()  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- observing the world


def get(url: str, timeout: float = 2.0) -> httpx.Response:
    with httpx.Client(trust_env=False) as c:
        return c.get(url, timeout=timeout)


def served_version(nginx: NginxInstance, app: str) -> str | None:
    """The version answering `/` through nginx's public port (None when nginx has no healthy answer)."""
    try:
        r = get(nginx.public_url_for(app) + "/")
    except httpx.HTTPError:
        return None
    return r.headers.get("x-app-version") if r.status_code == 200 else None


def routed_color(nginx: NginxInstance, app: str, ports: dict[str, int]) -> str | None:
    """The color nginx really proxies `app` to, from $upstream_addr on the control server."""
    try:
        r = get(f"{nginx.control_url}/bluegreen/{app}/version")
    except httpx.HTTPError:
        return None
    last = r.headers.get("x-bluegreen-upstream", "").split(",")[-1].strip()
    for color, port in ports.items():
        if last.endswith(f":{port}"):
            return color
    return None


def container(client: Any, name: str) -> Any | None:
    import docker.errors

    try:
        c = client.containers.get(name)
    except docker.errors.NotFound:
        return None
    return c


def read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Snapshot:
    """What a pass could change: compare two to prove it changed nothing."""

    containers: dict[str, tuple[str, str] | None]  # name -> (id, status)
    include: str | None
    include_mtime: int | None
    marker: str | None
    marker_mtime: int | None
    workers: tuple[int, ...]
    history_lines: int

    @classmethod
    def take(cls, client: Any, app: str, nginx: NginxInstance, marker: Path, state_dir: Path) -> Snapshot:
        cs: dict[str, tuple[str, str] | None] = {}
        for color in ("blue", "green"):
            c = container(client, f"{app}-{color}")
            cs[color] = (c.id, c.status) if c is not None else None
        hist = read(state_dir / "history.jsonl") or ""
        return cls(
            containers=cs,
            include=read(nginx.upstream_file(app)),
            include_mtime=mtime(nginx.upstream_file(app)),
            marker=read(marker),
            marker_mtime=mtime(marker),
            workers=tuple(nginx.worker_pids()),
            history_lines=len(hist.splitlines()),
        )


def history(state_dir: Path, app: str | None = None) -> list[dict[str, Any]]:
    text = read(state_dir / "history.jsonl") or ""
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in rows if app is None or r.get("app") == app]


def status_file(state_dir: Path, app: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((state_dir / "apps" / app / "status.json").read_text())
    return data


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in status["conditions"]:
        if c["type"] == kind:
            return dict(c)
    raise AssertionError(f"no condition {kind} in {status['conditions']}")


# ----------------------------------------------------------------------------- traffic


@dataclass
class Answer:
    at: float  # time.time() when the answer came
    status: int | None  # None: no HTTP answer (connection error)
    version: str | None  # X-App-Version of the container that answered
    color: str | None  # X-App-Color
    body: str
    error: str = ""


@dataclass
class Traffic:
    """Probe `url` from a background thread until stopped, at most `max_requests` times and `max_seconds`.

    Use as a context manager; `answers` holds everything seen, in order.
    """

    url: str
    interval: float = 0.02
    max_requests: int = 5000
    max_seconds: float = 120.0
    answers: list[Answer] = field(default_factory=list)
    retried: int = 0  # requests sent again once after a reused connection closed under them
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._loop, name="traffic", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(trust_env=False) as client:
            for _ in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    try:
                        r = client.get(self.url, timeout=3.0)
                    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                        # An idle reused connection closed under the request (an nginx reload retires its old
                        # workers): RFC 9110 §9.2.2 lets a client retry an idempotent GET, and browsers do, once.
                        # Like bench_cutover's keep-alive clients; a second failure is an answer like any other.
                        self.retried += 1
                        r = client.get(self.url, timeout=3.0)
                    self.answers.append(
                        Answer(time.time(), r.status_code, r.headers.get("x-app-version"), r.headers.get("x-app-color"), r.text[:200])
                    )
                except httpx.HTTPError as e:
                    self.answers.append(Answer(time.time(), None, None, None, "", repr(e)))
                self._stop.wait(self.interval)

    def versions(self) -> set[str | None]:
        return {a.version for a in self.answers}

    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200]


# ----------------------------------------------------------------------------- one app under test


class World:
    """One app wired to the test's nginx, and the controller run against it."""

    def __init__(self, client: Any, app: str, nginx: NginxInstance, tmp_path: Path, session_id: str, **spec: Any) -> None:
        self.client = client
        self.app = app
        self.nginx = nginx
        self.state = tmp_path / "state-dir"
        self.spec_path = tmp_path / "specs" / f"{app}.yaml"
        self.doc = app_spec(app, nginx, tmp_path, "bgtest:v1", "blue", session_id=session_id, **spec)
        self.ports: dict[str, int] = self.doc["spec"]["ports"]
        self.marker = Path(self.doc["spec"]["marker"])
        self.include = nginx.upstream_file(app)
        write_spec(self.spec_path, self.doc)

    def set(self, **spec: Any) -> None:
        self.doc = with_spec(self.doc, **spec)
        write_spec(self.spec_path, self.doc)

    def run(self, *args: str, timeout: float = 60.0) -> Run:
        return run_reconcile(self.spec_path, self.state, *args, timeout=timeout)

    def once(self, *args: str, expect: int = 0, timeout: float = 60.0) -> Run:
        r = self.run("--once", *args, timeout=timeout)
        assert r.returncode == expect, r.explain()
        return r

    def container(self, color: str) -> Any:
        return container(self.client, f"{self.app}-{color}")

    def snapshot(self) -> Snapshot:
        return Snapshot.take(self.client, self.app, self.nginx, self.marker, self.state)

    def served(self) -> str | None:
        return served_version(self.nginx, self.app)

    def routed(self) -> str | None:
        return routed_color(self.nginx, self.app, self.ports)

    def status(self) -> dict[str, Any]:
        return status_file(self.state, self.app)

    def status_json(self) -> tuple[int, dict[str, Any]]:
        r = self.run("--status", "--json")
        assert r.returncode in (0, 1), r.explain()
        data = json.loads(r.stdout)
        assert isinstance(data, list) and len(data) == 1
        return r.returncode, data[0]

    def plan_json(self) -> tuple[int, dict[str, Any]]:
        r = self.run("--plan", "--json")
        assert r.returncode in (0, 1), r.explain()
        return r.returncode, json.loads(r.stdout)[0]

    def assert_serving(self, color: str, version: str) -> None:
        """Traffic, route, marker, include and container all agree on `color` running `version`."""
        # Polled (bounded): for a moment after `nginx -s reload`, a new connection can still be accepted by a retiring
        # worker, which serves the previous configuration (the previous color, still healthy) until it exits.
        wait_until(lambda: self.served() == version, timeout=10, message=f"nginx serving {version}")
        assert self.routed() == color
        assert read(self.marker) == f"{color}\n"
        assert f":{self.ports[color]};" in (read(self.include) or "")
        c = self.container(color)
        assert c is not None and c.status == "running"

    def assert_converged_on(self, color: str, version: str) -> None:
        """assert_serving, and `--plan` finds nothing to do."""
        self.assert_serving(color, version)
        code, plan = self.plan_json()
        assert code == 0 and plan["inSync"] and plan["actions"] == [] and plan["blockers"] == [], plan
