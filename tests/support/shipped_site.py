"""Run a private NginxInstance with the SHIPPED site of nginx/ (what nginx/install.sh installs), not the plain one.

`start_shipped(tmpdir, apps, users)` renders nginx/site.conf.template (public server with Basic Auth and the
flag test, the maintenance answers with the shipped page), nginx/control.conf.template + nginx/control-app.conf.template (loopback control server) and
includes nginx/proxy.conf itself, with the placeholders install.sh fills set for the instance: the flag file
is ``conf.d/<app>.green`` beside the include, which is the spec's default flagFile for that upstreamFile.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .nginx import NginxInstance

ROOT = Path(__file__).resolve().parent.parent.parent
SHIPPED = ROOT / "nginx"
SHIPPED_USERS = {"ops": "correct horse"}  # the Basic Auth users of the `shipped_site` fixture (tests/conftest.py)
RETRY_AFTER = "30"  # the Retry-After of the maintenance answers (install.sh --retry-after)


def _fill(text: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        text = text.replace(f"@{k}@", v)
    return text


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """apr1 entries made with `openssl passwd -apr1`, as docs/nginx.md tells operators."""
    lines = []
    for user, password in users.items():
        h = subprocess.run(["openssl", "passwd", "-apr1", "-stdin"], input=password, capture_output=True, text=True, check=True)
        lines.append(f"{user}:{h.stdout.strip()}\n")
    path.write_text("".join(lines))
    return path


def start_shipped(tmpdir: Path, apps: list[str], users: dict[str, str]) -> NginxInstance:
    tmpdir = Path(tmpdir).resolve()
    tmpdir.mkdir(parents=True, exist_ok=True)
    htpasswd = write_htpasswd(tmpdir / "htpasswd", users)
    proxy_conf = str(SHIPPED / "proxy.conf")
    site = _fill(
        (SHIPPED / "site.conf.template").read_text(),
        {
            "LISTEN": "127.0.0.1:@PUBLIC_PORT@",
            "SERVER_NAME": "_",
            "REALM": "@APP@",
            "HTPASSWD": str(htpasswd),
            "FLAG": "@PREFIX@/conf.d/@APP@.green",
            "UPSTREAM_FILE": "@PREFIX@/conf.d/@APP@.upstream.conf",
            "PROXY_CONF": proxy_conf,
            "ACCESS_LOG": "@PREFIX@/logs/@APP@.access.jsonl",  # spec.verify.accessLog of the tests
            "MAINTENANCE_PAGE": str(SHIPPED / "maintenance.html"),
            "MAINTENANCE_JSON": str(SHIPPED / "maintenance.json"),
            "RETRY_AFTER": RETRY_AFTER,
        },
    )
    control_d = tmpdir / "nginx" / "control.d"
    control_d.mkdir(parents=True, exist_ok=True)
    for app in apps:
        (control_d / f"{app}.conf").write_text(
            _fill(
                (SHIPPED / "control-app.conf.template").read_text(),
                {"APP": app, "FLAG": str(tmpdir / "nginx" / "conf.d" / f"{app}.green"), "PROXY_CONF": proxy_conf},
            )
        )
    control = _fill(
        (SHIPPED / "control.conf.template").read_text(),
        {"CONTROL_LISTEN": "127.0.0.1:@CONTROL_PORT@", "CONTROL_D": str(control_d)},
    )
    return NginxInstance.start(tmpdir / "nginx", apps, site_template=site, control_template=control)
