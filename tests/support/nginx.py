"""A private, real nginx for a test: own prefix directory, loopback ports, pid file and logs.

Layout under the instance directory::

    nginx.conf                      rendered from MAIN_TEMPLATE (+ SITE_TEMPLATE per app, CONTROL_TEMPLATE)
    conf.d/<app>.upstream.conf      the include the controller writes; a placeholder until then
    logs/error.log, logs/access.log
    nginx.pid
    tmp/                            client body / proxy / fastcgi / uwsgi / scgi temp paths

nginx runs in the foreground (``daemon off``) as our child process, so it dies with the test; the pid
file still lets ``nginx -p DIR -c CONF -s reload`` (``reload_command``) signal it, exactly as the
controller does in production with ``nginx -s reload``.

The templates are plain strings with ``@NAME@`` placeholders (nginx itself uses ``$`` and braces):
``@PREFIX@`` (instance dir, no trailing slash), ``@CONF_D@``, ``@USER@`` (a ``user`` line or nothing),
``@SITES@``, ``@CONTROL@``; in SITE_TEMPLATE ``@APP@`` and ``@PUBLIC_PORT@``; in CONTROL_TEMPLATE
``@CONTROL_PORT@``. Pass ``site_template=`` / ``control_template=`` to ``NginxInstance.start`` to swap
in the shipped site templates.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .net import free_port

NGINX_BIN = os.environ.get("BLUEGREEN_NGINX", shutil.which("nginx") or "/usr/sbin/nginx")
APP_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

MAIN_TEMPLATE = """\
# Test nginx instance (tests/support/nginx.py)
worker_processes 1;
@USER@
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/logs/error.log info;
daemon off;

events {
    worker_connections 1024;
}

http {
    log_format bgtest '$remote_addr "$request" $status $body_bytes_sent upstream=$upstream_addr '
                      'upstream_status=$upstream_status rt=$request_time';
    access_log @PREFIX@/logs/access.log bgtest;
    client_body_temp_path @PREFIX@/tmp/client_body;
    proxy_temp_path @PREFIX@/tmp/proxy;
    fastcgi_temp_path @PREFIX@/tmp/fastcgi;
    uwsgi_temp_path @PREFIX@/tmp/uwsgi;
    scgi_temp_path @PREFIX@/tmp/scgi;
    proxy_connect_timeout 2s;

    # upstream <app> { ... } blocks, written by the controller.
    include @CONF_D@/*.conf;

@SITES@
@CONTROL@
}
"""

SITE_TEMPLATE = """\
    # public site of @APP@
    server {
        listen 127.0.0.1:@PUBLIC_PORT@;
        location / {
            proxy_pass http://@APP@;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
"""

CONTROL_TEMPLATE = """\
    # loopback control server: /bluegreen/<app>/<path> goes through upstream <app>
    server {
        listen 127.0.0.1:@CONTROL_PORT@;
        location ~ ^/bluegreen/(?<bg_app>[a-z0-9-]+)(?<bg_uri>/.*)$ {
            proxy_pass http://$bg_app$bg_uri$is_args$args;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            add_header X-Bluegreen-Upstream $upstream_addr always;
        }
    }
"""

# What an include holds before the controller wrote one. nginx -t accepts an upstream whose only
# server is marked down; requests then get 502 with $upstream_addr = the upstream's name.
PLACEHOLDER_TEMPLATE = (
    "# placeholder written by tests/support/nginx.py\nupstream @APP@ {\n    server 127.0.0.1:9 down;\n}\n"
)


class NginxError(RuntimeError):
    pass


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _children(ppid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(ppid) and fields[0] != "Z":
            pids.append(int(entry))
    return sorted(pids)


_RUNNING: dict[int, NginxInstance] = {}  # this process's started instances, until stopped


def settle_running() -> None:
    """Wait (bounded) until every running instance's reload, if one was just done (by a controller run), has told
    its old workers to go: what a test asks next is answered under the configuration the run left."""
    for instance in list(_RUNNING.values()):
        instance.worker_pids()


def _retiring(pid: int) -> bool:
    """Whether a worker has begun its graceful exit (nginx retitles it when it gets the quit signal)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"shutting down" in f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True


def _render(template: str, values: dict[str, str]) -> str:
    out = template
    for key, value in values.items():
        out = out.replace(f"@{key}@", value)
    leftover = re.findall(r"@[A-Z_]+@", out)
    if leftover:
        raise ValueError(f"unknown placeholders in nginx template: {sorted(set(leftover))}")
    return out


class NginxInstance:
    """A running private nginx. Create with ``NginxInstance.start(tmpdir, apps)``."""

    def __init__(
        self,
        directory: Path,
        apps: list[str],
        *,
        site_template: str = SITE_TEMPLATE,
        control_template: str = CONTROL_TEMPLATE,
        main_template: str = MAIN_TEMPLATE,
        nginx_bin: str = NGINX_BIN,
    ) -> None:
        for app in apps:
            if not APP_RE.match(app):
                raise ValueError(f"app name {app!r} must match {APP_RE.pattern}")
        self.dir = Path(directory).resolve()
        self.apps = list(apps)
        self.nginx_bin = nginx_bin
        self.site_template = site_template
        self.control_template = control_template
        self.main_template = main_template
        self.conf_path = self.dir / "nginx.conf"
        self.conf_d = self.dir / "conf.d"
        self.pid_path = self.dir / "nginx.pid"
        self.error_log_path = self.dir / "logs" / "error.log"
        self.access_log_path = self.dir / "logs" / "access.log"
        self.public_ports: dict[str, int] = {}
        self.control_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    # ----------------------------------------------------------------- construction

    @classmethod
    def start(
        cls,
        tmpdir: Path | str,
        apps: list[str],
        *,
        site_template: str = SITE_TEMPLATE,
        control_template: str = CONTROL_TEMPLATE,
        main_template: str = MAIN_TEMPLATE,
        timeout: float = 10.0,
    ) -> NginxInstance:
        """Write the config (placeholder includes for every app), check it with -t, start nginx, wait until it listens."""
        inst = cls(
            Path(tmpdir),
            apps,
            site_template=site_template,
            control_template=control_template,
            main_template=main_template,
        )
        last: Exception | None = None
        for _attempt in range(3):  # ports are picked before nginx binds them: retry on a lost race
            try:
                inst._start_once(timeout)
                return inst
            except NginxError as e:
                last = e
                inst.stop()
                if "Address already in use" not in str(e):
                    raise
        raise NginxError(f"nginx could not bind its ports after 3 attempts: {last}")

    def _start_once(self, timeout: float) -> None:
        for sub in ("conf.d", "logs", "tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.public_ports = {app: free_port() for app in self.apps}
        self.control_port = free_port()
        for app in self.apps:
            f = self.upstream_file(app)
            if not f.exists():
                f.write_text(_render(PLACEHOLDER_TEMPLATE, {"APP": app}))
        self.conf_path.write_text(self.render_config())
        self.check_config()
        offset = self._error_log_size()
        stdio = open(self.dir / "logs" / "nginx.stdio.log", "ab")  # noqa: SIM115 (kept by Popen)
        try:
            self.process = subprocess.Popen(
                self.base_command,
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            stdio.close()
        _RUNNING[id(self)] = self
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise NginxError(
                    f"nginx exited with {self.process.returncode} at start: {self.error_log_text(offset)[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.control_port), timeout=0.5):
                    pass
                if self.pid_path.exists() and all(self._port_open(p) for p in self.public_ports.values()):
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise NginxError(
                    f"nginx did not listen within {timeout:g}s: {self.error_log_text(offset)[-2000:]}"
                )
            time.sleep(0.05)

    @staticmethod
    def _port_open(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def render_config(self) -> str:
        user = "user root root;" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        sites = "".join(
            _render(self.site_template, {"APP": app, "PUBLIC_PORT": str(port), "PREFIX": str(self.dir)})
            for app, port in self.public_ports.items()
        )
        control = _render(
            self.control_template, {"CONTROL_PORT": str(self.control_port), "PREFIX": str(self.dir)}
        )
        return _render(
            self.main_template,
            {
                "PREFIX": str(self.dir),
                "CONF_D": str(self.conf_d),
                "USER": user,
                "SITES": sites,
                "CONTROL": control,
            },
        )

    # ----------------------------------------------------------------- API

    @property
    def base_command(self) -> list[str]:
        return [
            self.nginx_bin,
            "-p",
            f"{self.dir}/",
            "-c",
            str(self.conf_path),
            "-e",
            str(self.error_log_path),
        ]

    @property
    def test_command(self) -> list[str]:
        """``nginx -p DIR/ -c CONF -e ERRLOG -t``: what the controller's nginx.testCommand should be."""
        return [*self.base_command, "-t"]

    @property
    def reload_command(self) -> list[str]:
        """``nginx -p DIR/ -c CONF -e ERRLOG -s reload``: what the controller's nginx.reloadCommand should be."""
        return [*self.base_command, "-s", "reload"]

    @property
    def public_port(self) -> int:
        return self.public_ports[self.apps[0]]

    @property
    def public_url(self) -> str:
        """Public site of the first app."""
        return f"http://127.0.0.1:{self.public_port}"

    def public_url_for(self, app: str) -> str:
        return f"http://127.0.0.1:{self.public_ports[app]}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def upstream_file(self, app: str) -> Path:
        return self.conf_d / f"{app}.upstream.conf"

    def write_upstream(self, app: str, servers: list[str], extra: str = "") -> Path:
        """Write an include ``upstream <app> { server <s>; ... }`` (does not reload)."""
        body = "".join(f"    server {s};\n" for s in servers) + extra
        path = self.upstream_file(app)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"upstream {app} {{\n{body}}}\n")
        os.replace(tmp, path)
        return path

    def check_config(self) -> None:
        r = subprocess.run(self.test_command, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise NginxError(f"nginx -t failed ({r.returncode}): {r.stderr.strip()}")

    def reload(self, timeout: float = 10.0) -> None:
        """Run reload_command and wait until the new config is the only one accepting connections.

        ``nginx -s reload`` only signals the master: it returns before new workers run, and an old
        worker may still accept a connection until it has processed its shutdown signal. This waits
        for the master's "reconfiguring" and a new worker, and for every old worker to have logged
        "gracefully shutting down" (it closes its listening sockets right then) or to be gone.
        Old workers may live on while they finish requests they accepted before (e.g. SSE streams).
        """
        offset = self._error_log_size()
        old_workers = self.worker_pids()
        r = subprocess.run(self.reload_command, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise NginxError(f"nginx -s reload failed ({r.returncode}): {r.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while True:
            text = self.error_log_text(offset)
            if "[emerg]" in text:
                raise NginxError(f"nginx rejected the new config: {text[-2000:]}")
            started = "reconfiguring" in text and "start worker process" in text.split("reconfiguring", 1)[1]
            if started and all(
                f"{pid}#{pid}: gracefully shutting down" in text or not _alive(pid) for pid in old_workers
            ):
                return
            if time.monotonic() >= deadline:
                raise NginxError(f"nginx did not reload within {timeout:g}s: {text[-2000:]}")
            time.sleep(0.02)

    def worker_pids(self, timeout: float = 10.0) -> list[int]:
        """The current configuration's workers: a reload replaces them, so equal lists mean no reload.

        A reload's old workers retire at their own pace (one finishing a keep-alive or SSE request
        lives on), and right after a reload an old one may not have been told to go yet. Workers that
        retitled themselves "is shutting down" are left out, and this waits (bounded, on what /proc
        shows) until no more than `worker_processes` others remain.
        """
        if not self.running or self.process is None:
            return []
        deadline = time.monotonic() + timeout
        while True:
            current = [pid for pid in _children(self.process.pid) if not _retiring(pid)]
            if len(current) <= 1 or time.monotonic() >= deadline:  # the template runs worker_processes 1
                return current
            time.sleep(0.02)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGTERM), SIGKILL to the whole process group after `timeout`. Idempotent."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # Not reaped yet, so the group id cannot have been reused: kill master and workers.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.process = None
        _RUNNING.pop(id(self), None)

    def _error_log_size(self) -> int:
        try:
            return self.error_log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def error_log_text(self, offset: int = 0) -> str:
        try:
            with self.error_log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def access_log_text(self) -> str:
        try:
            return self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> NginxInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NginxInstance(dir={self.dir}, apps={self.apps}, public={self.public_ports}, control={self.control_port})"
