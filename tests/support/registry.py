"""A real registry (Debian's `docker-registry`, i.e. distribution 2.x) on a free loopback port.

Filesystem storage in a temporary directory; optionally htpasswd basic auth (the ECR test makes it
accept the user/password moto's GetAuthorizationToken hands out). dockerd treats 127.0.0.0/8 registries
as insecure (plain HTTP) by default, so pushes and pulls need no TLS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from .net import free_port
from .procs import ServerProcess

REGISTRY_BIN = os.environ.get("BLUEGREEN_REGISTRY", shutil.which("docker-registry") or "/usr/bin/docker-registry")


class RegistryUnavailable(RuntimeError):
    pass


def bcrypt_hash(password: str) -> str:
    """htpasswd's bcrypt line for distribution's htpasswd auth (apache2-utils' htpasswd, else libcrypt)."""
    htpasswd = shutil.which("htpasswd")
    if htpasswd:
        out = subprocess.run([htpasswd, "-nbB", "u", password], capture_output=True, text=True, check=True).stdout
        return out.strip().split(":", 1)[1]
    try:
        import crypt  # deprecated, still in 3.10-3.12; glibc/libxcrypt does bcrypt

        h = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    except (ImportError, AttributeError, OSError) as e:
        raise RegistryUnavailable(f"no way to make a bcrypt hash (install apache2-utils): {e}") from e
    if not h or not h.startswith("$2"):
        raise RegistryUnavailable("libcrypt cannot make bcrypt hashes (install apache2-utils)")
    return h


@dataclass
class Registry(ServerProcess):
    proc: subprocess.Popen[bytes]
    port: int
    root: Path
    auth: tuple[str, str] | None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, root: Path, auth: tuple[str, str] | None = None, timeout: float = 20.0) -> Registry:
        if not (os.path.isfile(REGISTRY_BIN) and os.access(REGISTRY_BIN, os.X_OK)):
            raise RegistryUnavailable(f"{REGISTRY_BIN} not found: apt-get install docker-registry")
        root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        auth_block = ""
        if auth is not None:
            (root / "htpasswd").write_text(f"{auth[0]}:{bcrypt_hash(auth[1])}\n")
            auth_block = f"auth:\n  htpasswd:\n    realm: bgtest\n    path: {root / 'htpasswd'}\n"
        (root / "config.yml").write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n  secret: bgtest-{port}\n" + auth_block
        )
        with (root / "registry.log").open("wb") as out:
            proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(root / "config.yml")], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        reg = cls(proc, port, root, auth)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RegistryUnavailable(f"docker-registry exited {proc.returncode}: {reg.log()[-2000:]}")
            try:
                if httpx.get(f"http://{reg.host}/v2/", timeout=1.0).status_code in (200, 401):
                    return reg
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                reg.stop()
                raise RegistryUnavailable(f"docker-registry did not answer on {reg.host} within {timeout:g}s")
            time.sleep(0.05)

    def log(self) -> str:
        return (self.root / "registry.log").read_text(errors="replace")


    def manifest_digest(self, repo: str, tag: str) -> str:
        r = httpx.head(
            f"http://{self.host}/v2/{repo}/manifests/{tag}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            auth=self.auth,
            timeout=5.0,
        )
        r.raise_for_status()
        return r.headers["Docker-Content-Digest"]
