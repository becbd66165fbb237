"""The shipped Nginx site (nginx/) on a real nginx, driven by the real controller; and flag mode on the fake world.

- Basic Auth: 401 without or with wrong credentials, 200 with the right ones; /actuator/* stays on the host.
- The app ports are published on loopback only; the control server listens on loopback only.
- An SSE stream opened before a cutover delivers every event after it, in both switch modes, with
  standby: stop: the old color is stopped only after its connections drained (and early, not after drainSeconds).
- The actuator is unreachable from the public site in every spelling (path parameters, encodings, case).
- nginx/install.sh: idempotent, nginx -t guarded, refuses a non-loopback control server and every value that
  would inject config (strict grammars, no sed metacharacter expansion).
- Flag mode on FakeWorld: the flag is state like any other (drift repaired by the same loop), a flag switch
  does not reload, moving between modes converges.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.app.routing import render_include
from controller.drivers.containers import _parse_time
from controller.world.facts import Memory
from tests.factories import make_app
from tests.fakes import reconciler, world_for
from tests.support.controller_run import app_spec, run_reconcile, with_spec, write_spec
from tests.support.net import free_port
from tests.support.nginx import NginxInstance
from tests.support.plans import plan_for
from tests.support.shipped_site import SHIPPED, start_shipped, write_htpasswd
from tests.support.wait import wait_until

USERS = {"ops": "correct horse"}
AUTH = ("ops", "correct horse")


@pytest.fixture
def shipped(tmp_path: Path, app_name: str, nginx: NginxInstance) -> Iterator[NginxInstance]:
    # `nginx` (the plain harness site) only makes sure the binary exists and is skipped/failed like the rest.
    inst = start_shipped(tmp_path / "shipped", [app_name], USERS)
    try:
        yield inst
    finally:
        inst.stop()


def _deploy(
    tmp_path: Path, app: str, inst: NginxInstance, image: str, color: str, session_id: str, switch: str = "flag", **spec: Any
) -> tuple[Path, dict[str, Any]]:
    doc = with_spec(app_spec(app, inst, tmp_path, image, color, session_id=session_id, **spec), nginx={"switch": switch})
    path = write_spec(tmp_path / "spec.yaml", doc)
    r = run_reconcile(path, tmp_path / "state")
    assert r.returncode == 0, r.explain() + inst.error_log_text()[-2000:]
    return path, doc


def _client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=5)


def test_basic_auth_and_actuator(tmp_path: Path, app_name: str, shipped: NginxInstance, test_images: dict[str, str], session_id: str) -> None:
    _deploy(tmp_path, app_name, shipped, test_images["v1"], "blue", session_id)
    url = shipped.public_url_for(app_name)
    with _client() as c:
        r = c.get(url + "/version")
        assert r.status_code == 401 and r.headers["www-authenticate"] == f'Basic realm="{app_name}"'
        assert c.get(url + "/version", auth=("ops", "wrong")).status_code == 401
        assert c.get(url + "/version", auth=("nobody", "correct horse")).status_code == 401
        r = c.get(url + "/version", auth=AUTH)
        assert r.status_code == 200 and r.text.startswith("v1")
        assert "authorization" not in c.get(url + "/env?HTTP_AUTHORIZATION", auth=AUTH).text.lower()
        # Health: the password like everything else; the rest of actuator never leaves the host.
        assert c.get(url + "/actuator/health").status_code == 401
        assert c.get(url + "/actuator/health", auth=AUTH).json() == {"status": "UP"}
        assert c.get(url + "/actuator/env").status_code in (401, 403)
        assert c.get(url + "/actuator/env", auth=AUTH).status_code == 403
        # A POST is proxied (and would never be replayed on a retry).
        assert c.post(url + "/version", auth=AUTH, content=b"x").status_code in (200, 405, 501)
        # The control server answers without a password, but only on loopback, with the route it took.
        r = c.get(f"{shipped.control_url}/bluegreen/{app_name}/actuator/health")
        assert r.status_code == 200 and r.headers["x-bluegreen-upstream"].startswith("127.0.0.1:")


class _EchoBackend:
    """A loopback HTTP backend that records the request target exactly as nginx forwarded it."""

    def __init__(self) -> None:
        seen: list[str] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                body = f"backend saw {self.path}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _raw_get(port: int, target: str, auth: tuple[str, str] | None = AUTH) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (an HTTP client would normalise `..` and escapes)."""
    head = f"GET {target} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n"
    if auth:
        head += "Authorization: Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode() + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall((head + "\r\n").encode("latin-1"))
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


# Spellings that are /actuator/<endpoint> (or /actuator itself) for Spring Boot on Tomcat, which drops
# `;params` from each segment, decodes, and resolves dot segments; and nginx variants of the same.
ACTUATOR_SPELLINGS = [
    "/actuator",
    "/actuator/",
    "/actuator/env",
    "/actuator;/env",
    "/actuator;x=1/heapdump",
    "/x/..;/actuator/env",
    "/;/actuator/env",
    "/x;/../actuator/env",
    "/actuator/health;/../env",
    "/actuator/health/..;/env",
    "/actuator/health;x",
    "/actuator/health/",
    "/actuator/health/../env",
    "/actuator/health%2F..%2Fenv",
    "/actuator%2Fenv",
    "/actuator%2fheapdump",
    "/actuator%3B/env",
    "/x%3B/..%3B/actuator/env",
    "/%61ctuator/env",
    "/ACTUATOR/env",
    "/Actuator;/Env",
    "//actuator/env",
    "/./actuator/env",
    "/x/../actuator/env",
    "/x\\..\\actuator\\env",
    "/actuator\\env",
    "/app;jsessionid=1",
    "/actuator.json",
]


def test_actuator_is_unreachable_in_any_spelling(app_name: str, shipped: NginxInstance) -> None:
    backend = _EchoBackend()
    try:
        include = "".join(f"upstream {app_name}-{c} {{\n    server 127.0.0.1:{backend.port};\n}}\n" for c in ("blue", "green"))
        shipped.upstream_file(app_name).write_text(include)
        shipped.reload()
        port = shipped.public_ports[app_name]
        # Normal paths still reach the app, as sent; health reaches it only as the exact path.
        for target in ("/", "/version", "/api/items?q=a;b", "/static/app.js", "/x/../version"):
            status, _ = _raw_get(port, target)
            assert status == 200, target
        assert backend.seen == ["/", "/version", "/api/items?q=a;b", "/static/app.js", "/x/../version"]
        backend.seen.clear()
        for target in ACTUATOR_SPELLINGS:
            status, data = _raw_get(port, target)
            assert status in (400, 403, 404), (target, data[:200])
            assert backend.seen == [], f"{target!r} reached the app as {backend.seen}"
            assert b"nginx/" not in data, "server_tokens off: no version in headers or error pages"
        for target in ("/actuator/health", "/actuator/health?show=all", "/actuator//health", "/actuator/%68ealth"):
            status, _ = _raw_get(port, target)
            assert status == 200, target
        assert backend.seen == ["/actuator/health"] * 4
        backend.seen.clear()
        status, data = _raw_get(port, "/actuator/env", auth=None)
        assert status in (401, 403) and b"nginx/" not in data and backend.seen == []
    finally:
        backend.close()


def _non_loopback_addresses() -> list[str]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False).stdout
    addrs = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            ip = parts[parts.index("inet") + 1].split("/")[0]
            if not ipaddress.ip_address(ip).is_loopback:
                addrs.append(ip)
    return addrs


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_app_ports_and_control_server_only_on_loopback(
    tmp_path: Path, app_name: str, shipped: NginxInstance, test_images: dict[str, str], session_id: str, docker_client: Any
) -> None:
    _, doc = _deploy(tmp_path, app_name, shipped, test_images["v1"], "blue", session_id)
    port = doc["spec"]["ports"]["blue"]
    info = docker_client.api.inspect_container(f"{app_name}-blue")
    bindings = [b for bs in info["HostConfig"]["PortBindings"].values() for b in bs]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    assert _connects("127.0.0.1", port)
    others = _non_loopback_addresses()
    assert others, "no non-loopback address to try"
    for ip in others:
        assert not _connects(ip, port), f"app port {port} answers on {ip}"
        assert not _connects(ip, shipped.control_port), f"control server answers on {ip}"
    # The shipped control server can only be installed on loopback.
    assert "listen @CONTROL_LISTEN@;" in (SHIPPED / "control.conf.template").read_text()


class SseReader(threading.Thread):
    """Reads one event stream to its end (bounded), recording each event's data line."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None, timeout: float = 60) -> None:
        super().__init__(daemon=True)
        self.url, self.auth, self.timeout = url, auth, timeout
        self.events: list[str] = []
        self.status = 0
        self.error: str | None = None
        self.first = threading.Event()
        self.ended_at = 0.0

    def run(self) -> None:
        try:
            with (
                httpx.Client(trust_env=False, timeout=httpx.Timeout(self.timeout, connect=5)) as c,
                c.stream("GET", self.url, auth=self.auth) as r,
            ):
                self.status = r.status_code
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line[6:])
                        self.first.set()
        except httpx.HTTPError as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.ended_at = time.time()
            self.first.set()


@pytest.mark.parametrize("switch", ["flag", "reload"])
def test_sse_stream_survives_cutover_and_old_color_stops_after_drain(
    tmp_path: Path, app_name: str, shipped: NginxInstance, test_images: dict[str, str], session_id: str, docker_client: Any, switch: str
) -> None:
    spec_path, doc = _deploy(
        tmp_path, app_name, shipped, test_images["v1"], "blue", session_id, switch, standby="stop", drainSeconds=25
    )
    n = 50
    # The stream opens once the site answers (polled, bounded): what is tested is the cutover under an open stream.
    wait_until(lambda: httpx.get(shipped.public_url_for(app_name) + "/", auth=AUTH, timeout=2, trust_env=False).status_code == 200,
               timeout=10, message="the site answering 200")
    stream = SseReader(f"{shipped.public_url_for(app_name)}/sse?n={n}&ms=120", AUTH)
    stream.start()
    assert stream.first.wait(10) and stream.events, f"status {stream.status}, error {stream.error}"
    write_spec(spec_path, with_spec(doc, image=test_images["v2"], activeColor="green"))
    r = run_reconcile(spec_path, tmp_path / "state", timeout=90)
    assert r.returncode == 0, r.explain()
    stream.join(30)
    assert stream.status == 200 and stream.error is None
    assert stream.events == [f"v1 {i}" for i in range(1, n + 1)], "every event of the stream opened before the cutover"
    # The drain ended when the stream did (~6 s), not after drainSeconds, and only then was blue stopped.
    assert r.elapsed < 20, r.explain()
    state = docker_client.api.inspect_container(f"{app_name}-blue")["State"]
    assert state["Running"] is False
    finished = _parse_time(state["FinishedAt"])
    assert finished is not None and finished >= stream.ended_at - 0.5, "blue was stopped before its stream ended"
    with _client() as c:
        assert c.get(shipped.public_url_for(app_name) + "/version", auth=AUTH).text.startswith("v2")
    stops = [e for e in r.logs() if e.get("action") == "StopContainer" and e.get("event") == "action.done"]
    assert stops and stops[0]["seconds"] >= 0.5, "no drain: the stream should still have been open at the switch"


def test_install_script_is_idempotent_and_guarded(tmp_path: Path, nginx: NginxInstance) -> None:
    etc = tmp_path / "etc-nginx"
    (etc / "sites-enabled").mkdir(parents=True)
    (etc / "sites-available").mkdir()
    (etc / "conf.d").mkdir()
    (etc / "logs").mkdir()
    (etc / "nginx.conf").write_text(
        f"pid {etc}/nginx.pid;\nerror_log {etc}/logs/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {etc}/conf.d/*.conf;\n  include {etc}/sites-enabled/*;\n}}\n"
    )
    cmd = f"{nginx.nginx_bin} -p {etc}/ -c {etc}/nginx.conf -e {etc}/logs/error.log"
    base = [str(SHIPPED / "install.sh"), "--app", "shop", "--nginx-dir", str(etc), "--nginx", cmd, "--listen", f"127.0.0.1:{free_port()}", "--no-reload"]
    base += ["--access-log", f"{etc}/logs/shop.access.jsonl"]  # not the host's /var/log/nginx

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60)

    r = run()
    assert r.returncode == 2 and "htpasswd -c -m" in r.stderr  # no user file yet: told how to make one
    (etc / "bluegreen").mkdir()
    write_htpasswd(etc / "bluegreen" / "shop.htpasswd", USERS)
    r = run()
    assert r.returncode == 0, r.stderr
    site = etc / "sites-available" / "bluegreen-shop.conf"
    assert (etc / "sites-enabled" / "bluegreen-shop.conf").resolve() == site
    assert f"if (-f {etc}/conf.d/shop.green)" in site.read_text()
    # Maintenance: the shipped page and JSON installed beside the user file, the Retry-After of the site.
    assert (etc / "bluegreen" / "shop.maintenance.html").read_text() == (SHIPPED / "maintenance.html").read_text()
    assert (etc / "bluegreen" / "shop.maintenance.json").read_text() == (SHIPPED / "maintenance.json").read_text()
    assert f"if (-f {etc}/conf.d/shop.green.maintenance)" in site.read_text() and "add_header Retry-After 60 always;" in site.read_text()
    assert (etc / "conf.d" / "shop.upstream.conf").exists() and (etc / "bluegreen" / "control.d" / "shop.conf").exists()
    before = {p: p.stat().st_mtime_ns for p in etc.rglob("*") if p.is_file()}
    r = run()
    assert r.returncode == 0 and "nothing to do" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in etc.rglob("*") if p.is_file()} == before
    # A change nginx -t rejects puts every file back.
    r = run("--listen", f"127.0.0.1:{free_port()} no_such_flag")
    assert r.returncode == 1 and "back as it was" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in etc.rglob("*") if p.is_file() and "logs" not in p.parts} == {
        p: t for p, t in before.items() if "logs" not in p.parts
    }
    assert "no_such_flag" not in site.read_text()
    r = run("--control-listen", "0.0.0.0:8099")
    assert r.returncode == 2 and "loopback" in r.stderr
    # A page of your own and another Retry-After: installed, and the site follows.
    page = tmp_path / "down.html"
    page.write_text("<p>down: <!--# include virtual=\"/.bluegreen/maintenance-message\" --></p>\n")
    r = run("--maintenance-page", str(page), "--retry-after", "300")
    assert r.returncode == 0, r.stderr
    assert (etc / "bluegreen" / "shop.maintenance.html").read_text() == page.read_text()
    assert "add_header Retry-After 300 always;" in site.read_text()


# Each value would add a directive, a variable, a second listen, or (through sed's `&`, `\`, `|`, a newline) a
# piece of the template to root's nginx config. install.sh must refuse it (exit 2) and change nothing.
INSTALL_INJECTIONS = [
    ("--control-listen", "127.0.0.1:8099; listen 0.0.0.0:8098"),
    ("--control-listen", "127.0.0.1:8099 default_server"),
    ("--control-listen", "127.0.0.1:8099\nlisten 0.0.0.0:8098"),
    ("--control-listen", "127.0.0.1:8099\n"),
    ("--control-listen", "127.0.0.1.evil.example:8099"),
    ("--control-listen", "127.0.0.1:80990"),
    ("--control-listen", "localhost:8099&"),
    ("--server-name", "a.example.com; location / { return 200; }"),
    ("--server-name", "a.example.com&"),
    ("--server-name", "a.example.com\nlisten 0.0.0.0:8097;"),
    ("--server-name", "$host"),
    ("--listen", "127.0.0.1:8080; allow all"),
    ("--listen", "127.0.0.1:8080|"),
    ("--listen", "127.0.0.1:8080\\"),
    ("--realm", 'shop" ; auth_basic off; #'),
    ("--realm", "$remote_user"),
    ("--realm", "a&b"),
    ("--realm", "shop\nauth_basic off;"),
    ("--htpasswd", "relative/htpasswd"),
    ("--htpasswd", "/etc/x y"),
    ("--flag-file", "/tmp/x&.green"),
    ("--flag-file", "/tmp/x.green) { set $bg_backend evil; } if (-f /x"),
    ("--flag-file", "/tmp/$uri"),
    ("--flag-file", "/tmp/x\n.green"),
    ("--upstream-file", "/tmp/a|b.conf"),
    ("--upstream-file", "/tmp/a#b.conf"),
    ("--nginx-dir", "/etc/nginx\\"),
    ("--retry-after", "60; add_header X-Evil 1"),
    ("--retry-after", "60\nadd_header X-Evil 1;"),
    ("--retry-after", "0"),
    ("--retry-after", "$msec"),
    ("--maintenance-page", "/tmp/no-such-page.html"),
]


@pytest.mark.parametrize(("option", "value"), INSTALL_INJECTIONS)
def test_install_script_refuses_injection(tmp_path: Path, option: str, value: str) -> None:
    etc = tmp_path / "etc-nginx"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "bluegreen").mkdir()
    write_htpasswd(etc / "bluegreen" / "shop.htpasswd", USERS)
    # `true` as the nginx command: a value that got through would be installed (and show up below).
    base = [str(SHIPPED / "install.sh"), "--app", "shop", "--nginx-dir", str(etc), "--nginx", "true", "--no-reload"]
    value = value.replace("/tmp/", f"{tmp_path}/")  # a regression must not litter the real /tmp
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = subprocess.run([*base, option, value], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and option in r.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "nothing written"
    # The same run without the bad value installs: the refusal was about that value.
    r = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- flag mode, in-memory world


def test_flag_switch_does_not_reload_and_flag_drift_is_repaired(tmp_path: Path) -> None:
    v1 = make_app()
    assert v1.spec.nginx.switch == "flag" and v1.flag_file == Path("/nginx/dialogue.green")
    w = world_for(v1)
    assert reconciler(w, tmp_path / "s").reconcile(v1).converged
    assert w.files[v1.upstream_file] == render_include(v1, "blue") and v1.flag_file not in w.files
    v2 = make_app(image="dialogue:2", activeColor="green")
    w.mutations.clear()
    assert reconciler(w, tmp_path / "s").reconcile(v2).converged
    assert "reload" not in w.mutations and f"write {v1.flag_file}" in w.mutations
    assert w.routed("dialogue") == ["127.0.0.1:18082"]
    # Someone removes the flag: traffic falls back to blue at once; the same loop puts it back.
    del w.files[v1.flag_file]
    assert w.routed("dialogue") == ["127.0.0.1:18081"]
    p = plan_for(v2, w, Memory())
    assert [a.describe() for a in p.actions] == [
        "WriteMarker(blue): Nginx serves blue until the switch",  # the marker tells the truth meanwhile
        "SwitchRoute(green): create /nginx/dialogue.green, confirm",
        "WriteMarker(green): Nginx serves green",
    ]
    w.mutations.clear()
    assert reconciler(w, tmp_path / "s").reconcile(v2).converged
    assert "reload" not in w.mutations and w.routed("dialogue") == ["127.0.0.1:18082"]
    assert w.files[v2.marker_path] == "green\n"
    # Converged: nothing touched.
    w.mutations.clear()
    assert reconciler(w, tmp_path / "s").reconcile(v2).converged and w.mutations == []


def test_moving_between_switch_modes_converges(tmp_path: Path) -> None:
    reload_v1 = make_app(nginx={"switch": "reload"})
    w = world_for(reload_v1)
    assert reconciler(w, tmp_path / "s").reconcile(reload_v1).converged
    w.files[reload_v1.flag_file] = "stale\n"  # a leftover flag: irrelevant in reload mode (every name -> live)
    assert w.routed("dialogue") == ["127.0.0.1:18081"]
    flag_v1 = make_app()
    r = reconciler(w, tmp_path / "s").reconcile(flag_v1)
    assert r.converged and reload_v1.flag_file not in w.files and w.routed("dialogue") == ["127.0.0.1:18081"]
    assert w.violations == []
    back = make_app(image="dialogue:2", activeColor="green", nginx={"switch": "reload"})
    assert reconciler(w, tmp_path / "s").reconcile(back).converged
    assert w.loaded["dialogue"] == ["127.0.0.1:18082"] and w.routed("dialogue") == ["127.0.0.1:18082"]
