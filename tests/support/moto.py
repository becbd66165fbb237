"""A real moto server (`moto_server`, from the moto package) on a free loopback port, for SSM and ECR tests.

    with MotoServer.start(tmp_dir) as moto:
        moto.client("ssm").put_parameter(...)
        env = moto.env()   # AWS_ENDPOINT_URL, dummy credentials, AWS_REGION: for a `reconcile` subprocess

Nothing is mocked in-process: the controller talks HTTP to the server through boto3, as it talks to AWS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .net import free_port
from .procs import ServerProcess

REGION = "ap-northeast-2"
ACCOUNT = "123456789012"  # moto's default account
AWS_ENV_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SSM",
    "AWS_ENDPOINT_URL_ECR",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
)


class MotoUnavailable(RuntimeError):
    pass


def moto_command() -> list[str]:
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if os.path.exists(exe):
        return [exe]
    try:
        import moto.server  # noqa: F401  (needs moto[server]: flask)
    except ImportError as e:
        raise MotoUnavailable(f"moto server not installed ({e}); pip install 'moto[server]'") from e
    return [sys.executable, "-m", "moto.server"]


@dataclass
class MotoServer(ServerProcess):
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, workdir: Path, timeout: float = 30.0) -> MotoServer:
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = workdir / "moto.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*moto_command(), "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = cls(proc, port, log)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise MotoUnavailable(f"moto_server exited {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{server.url}/moto-api/", timeout=1.0).status_code < 500:
                    return server
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise MotoUnavailable(f"moto_server did not answer on {server.url} within {timeout:g}s")
            time.sleep(0.1)


    def env(self, region: str | None = REGION, **extra: str) -> dict[str, str]:
        """Environment for a controller process: this endpoint, dummy credentials, no profile or IMDS lookups."""
        env = {k: v for k, v in os.environ.items() if k not in AWS_ENV_KEYS}
        env.update(
            AWS_ENDPOINT_URL=self.url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE="/nonexistent/aws-config",
            AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
        )
        if region:
            env["AWS_REGION"] = region
        env.update(extra)
        return env

    def client(self, service: str, region: str = REGION) -> Any:
        import boto3

        return boto3.session.Session().client(
            service,
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
