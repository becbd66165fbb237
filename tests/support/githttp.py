"""A real git server for the GitOps tests: Debian's `git http-backend` (smart HTTP) on a free loopback port.

nginx cannot run a CGI program without fcgiwrap (not installed), so a small threaded HTTP server of the
standard library plays the web server's part: it checks HTTP Basic auth against one token (401 otherwise,
like a forge), then runs `git http-backend` as a CGI for the request, exactly as a web server would. It
records the credentials each request carried, so a test can prove the controller sent the token.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .net import free_port

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"


class GitHttpServer:
    def __init__(self, root: Path, token: str | None) -> None:
        self.root = root
        self.token = token
        self.port = free_port()
        self.seen_auth: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._cgi()

            def do_POST(self) -> None:
                self._cgi()

            def _cgi(self) -> None:
                auth = self.headers.get("Authorization")
                server.seen_auth.append(auth)
                if server.token is not None:
                    want = "Basic " + base64.b64encode(f"x-access-token:{server.token}".encode()).decode()
                    if auth != want:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="git"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {
                    "PATH": "/usr/bin:/bin",
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "GIT_CONFIG_NOSYSTEM": "1",
                    "GIT_CONFIG_GLOBAL": "/dev/null",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_ADDR": "127.0.0.1",
                    "REMOTE_USER": "x-access-token" if server.token else "",
                }
                for h in ("Git-Protocol", "Content-Encoding"):
                    if self.headers.get(h):
                        env["HTTP_" + h.upper().replace("-", "_")] = self.headers[h]
                p = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True, timeout=30, check=False)
                head, _, payload = p.stdout.partition(b"\r\n\r\n")
                status = 200
                headers: list[tuple[str, str]] = []
                for line in head.decode(errors="replace").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="git-http", daemon=True)

    def url(self, repo: str) -> str:
        return f"http://127.0.0.1:{self.port}/{repo}"

    def __enter__(self) -> GitHttpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def git(cwd: Path, *args: str, key: Path | None = None) -> str:
    """Run git in a test repository (an isolated config; SSH-signed commits with `key`)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_AUTHOR_NAME": "ci",
        "GIT_AUTHOR_EMAIL": "ci@test.invalid",
        "GIT_COMMITTER_NAME": "ci",
        "GIT_COMMITTER_EMAIL": "ci@test.invalid",
        "LC_ALL": "C",
    }
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}.pub", "-c", "commit.gpgsign=true"] if key else []
    p = subprocess.run(["git", *sign, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30, check=False)
    if p.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {p.stderr}")
    return p.stdout.strip()


def ssh_key(path: Path) -> str:
    """A fresh ed25519 key pair at `path`; returns the allowed-signers line for it."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci", "-f", str(path)], check=True, timeout=30)
    kind, blob = Path(f"{path}.pub").read_text().split()[:2]
    return f"ci@test.invalid {kind} {blob}\n"


class Upstream:
    """The repository CI pushes to: a bare repo under the server's root, and a work clone to commit from."""

    def __init__(self, root: Path, name: str, key: Path | None) -> None:
        self.bare = root / f"{name}.git"
        self.work = root / f"{name}-work"
        self.key = key
        self.bare.mkdir(parents=True)
        git(self.bare, "init", "-q", "--bare", "-b", "main")
        self.work.mkdir()
        git(self.work, "init", "-q", "-b", "main")

    def commit(self, files: dict[str, str], message: str, *, signed: bool = True) -> str:
        for rel, text in files.items():
            p = self.work / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "--allow-empty", "-m", message, key=self.key if signed else None)
        return git(self.work, "rev-parse", "HEAD")

    def amend(self, message: str) -> str:
        """Rewrite the last commit (a new commit that does not descend from it), unsigned."""
        git(self.work, "commit", "-q", "--amend", "--allow-empty", "-m", message)
        return git(self.work, "rev-parse", "HEAD")

    def push(self, *, force: bool = False) -> None:
        git(self.work, "push", "-q", *(["--force"] if force else []), str(self.bare), "HEAD:refs/heads/main")

    def reset(self, rev: str) -> None:
        git(self.work, "reset", "-q", "--hard", rev)

    def delete_ref(self) -> None:
        git(self.bare, "update-ref", "-d", "refs/heads/main")
