"""Image pulls with registry auth: ECR through boto3, every other registry through the host's Docker credentials.

- `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]/repo:tag`: a token from `ecr:GetAuthorizationToken`
  (standard AWS credential chain; `AWS_ENDPOINT_URL_ECR` / `AWS_ENDPOINT_URL` override the endpoint) is
  decoded into `auth_config` for the pull. boto3 is imported only for such images.
- Any other registry: no auth_config is passed, so the Docker SDK uses ~/.docker/config.json (auths and
  credential helpers) exactly like `docker pull`.

References are parsed by `controller.kernel.imageref.ImageRef` (repository and tag/digest for the Engine, the host
for auth). Progress: a single updating line on a terminal; JSON log events (`image.pull.*`) otherwise.
A failed pull raises ImageError with one line (docker-py/requests/botocore errors mapped by a table, no
third-party chain, every quoted line redacted); nothing else has been changed at that point.
"""

from __future__ import annotations

import base64
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from controller.drivers.aws import aws_client, aws_errors, redacted_line
from controller.drivers.mapping import Rule, map_exceptions
from controller.kernel.errors import DockerUnavailable, ImageError, SecretsError
from controller.kernel.imageref import ImageRef, InvalidImageRef
from controller.kernel.logs import get_logger, register_secret

ECR_HOST_RE = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]+)\.amazonaws\.com(?:\.cn)?$"
)


def parse_ref(image: str) -> ImageRef:
    """`ImageRef.parse`, with a reference it cannot read as ImageError (the spec's check is a separate pattern)."""
    with map_exceptions([Rule(InvalidImageRef, ImageError)], f"image {image}"):
        return ImageRef.parse(image)


def ecr_registry(host: str | None) -> tuple[str, str] | None:
    """(account, region) when `host` is an ECR registry."""
    m = ECR_HOST_RE.match(host or "")
    return (m.group("account"), m.group("region")) if m else None


def decode_ecr_token(data: dict[str, Any], host: str) -> dict[str, str]:
    """`authorizationData[0]` -> Docker auth_config. Both the token and the password are registered for redaction."""
    token = str(data.get("authorizationToken") or "")
    register_secret(token)
    try:
        user, sep, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        raise ImageError(f"ECR registry {host}: the authorization token is not base64 'user:password'") from None
    if not sep or not user or not password:
        raise ImageError(f"ECR registry {host}: the authorization token is not base64 'user:password'")
    register_secret(password)
    return {"username": user, "password": password, "serveraddress": str(data.get("proxyEndpoint") or f"https://{host}")}


def ecr_auth_config(host: str, client_factory: Callable[[str, str | None], Any] | None = None) -> dict[str, str]:
    """Get a registry token for the ECR registry `host` through boto3 (`ecr:GetAuthorizationToken`)."""
    found = ecr_registry(host)
    if found is None:
        raise ImageError(f"{host} is not an ECR registry")
    account, region = found
    factory = client_factory or aws_client  # boto3 only now, and only for ECR
    what = f"ECR registry {host}: GetAuthorizationToken"
    try:
        with aws_errors(what, ImageError):
            out = factory("ecr", region).get_authorization_token(registryIds=[account])
    except SecretsError as e:
        raise ImageError(str(e)) from None
    data = (out.get("authorizationData") or [None])[0]
    if not data:
        raise ImageError(f"{what}: no authorizationData in the answer")
    return decode_ecr_token(data, host)


def auth_for(image: str, client_factory: Callable[[str, str | None], Any] | None = None) -> dict[str, str] | None:
    """auth_config for pulling `image`: an ECR token, or None to let the Docker SDK use ~/.docker/config.json."""
    host = parse_ref(image).registry
    if ecr_registry(host) is not None and host is not None:
        return ecr_auth_config(host, client_factory)
    return None


@dataclass
class Progress:
    """Pull progress: an updating line on a terminal, throttled log events otherwise."""

    image: str
    stream: TextIO | None = None
    every: float = 2.0
    layers: dict[str, str] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    digest: str | None = None
    _last: float = 0.0
    _drawn: bool = False

    def __post_init__(self) -> None:
        out = self.stream if self.stream is not None else sys.stderr
        self._tty = out.isatty()
        self._out = out
        self._log = get_logger(image=self.image)

    def start(self) -> None:
        self._log.info("image.pull.start")

    def update(self, ev: dict[str, Any]) -> None:
        status = str(ev.get("status") or "")
        if status.startswith("Digest: "):
            self.digest = status.removeprefix("Digest: ").strip()
        layer = ev.get("id")
        if layer and status and not status.startswith(("Pulling from", "Digest", "Status")):
            self.layers[str(layer)] = status
            detail = ev.get("progressDetail") or {}
            if isinstance(detail, dict) and detail.get("total"):
                self.current[str(layer)] = int(detail.get("current") or 0)
                self.total[str(layer)] = int(detail["total"])
            if status in ("Pull complete", "Already exists") and str(layer) in self.total:
                self.current[str(layer)] = self.total[str(layer)]
        now = time.monotonic()
        if now - self._last < (0.2 if self._tty else self.every):
            return
        self._last = now
        done = sum(1 for s in self.layers.values() if s in ("Pull complete", "Already exists"))
        mb = sum(self.current.values()) / 1e6
        total = sum(self.total.values()) / 1e6
        if self._tty:
            self._out.write(f"\rpulling {self.image}: {done}/{len(self.layers)} layers, {mb:.1f}/{total:.1f} MB ")
            self._out.flush()
            self._drawn = True
        else:
            self._log.info("image.pull.progress", layers_done=done, layers=len(self.layers), mb=round(mb, 1), mb_total=round(total, 1))

    def finish(self, ok: bool) -> None:
        if self._drawn:
            self._out.write("\n")
            self._out.flush()
        if ok:
            self._log.info("image.pull.done", digest=self.digest, layers=len(self.layers))


def _explained(e: BaseException) -> str:
    return redacted_line(getattr(e, "explanation", None) or e)


def _daemon_rules() -> list[Rule]:
    """The daemon itself unreachable: said as `pull <image>: Docker daemon unreachable: ...`."""
    import requests.exceptions

    return [Rule((requests.exceptions.ConnectionError, requests.exceptions.Timeout), DockerUnavailable, "Docker daemon unreachable", redacted_line)]


def _pull_rules() -> list[Rule]:
    """The daemon answered but the pull failed (unknown manifest, no credentials, ...): ImageError, specific rows first."""
    import docker.errors

    return [Rule(docker.errors.APIError, ImageError, explain=_explained), Rule(docker.errors.DockerException, ImageError, explain=redacted_line)]


def pull_image(api: Any, image: str, *, auth_config: dict[str, str] | None = None, progress: Progress | None = None) -> str | None:
    """Pull `image` through the Engine API client `api` (docker.APIClient); returns the manifest digest if reported."""
    what = f"image {image} is not present locally and cannot be pulled"
    repo, tag = parse_ref(image).pull_args()
    prog = progress or Progress(image)
    prog.start()
    ok = False
    # chain=False: a registry's answer can quote the request, and auth_config holds a password.
    try:
        with map_exceptions(_daemon_rules(), f"pull {image}", chain=False), map_exceptions(_pull_rules(), what, chain=False):
            for ev in api.pull(repo, tag=tag, stream=True, decode=True, auth_config=auth_config):
                if not isinstance(ev, dict):
                    continue
                if ev.get("error") or ev.get("errorDetail"):
                    msg = ev.get("error") or (ev.get("errorDetail") or {}).get("message") or "error"
                    raise ImageError(f"{what}: {redacted_line(msg)}")
                prog.update(ev)
        ok = True
    finally:
        prog.finish(ok)
    return prog.digest


def ensure_pulled(client: Any, image: str, client_factory: Callable[[str, str | None], Any] | None = None) -> str | None:
    """Pull `image` with the right credentials (client: docker.DockerClient); ImageError if it cannot be had."""
    auth = auth_for(image, client_factory)
    digest = pull_image(client.api, image, auth_config=auth)
    import docker.errors

    rules = [
        Rule(docker.errors.ImageNotFound, ImageError, explain=lambda _: "the pull reported success but the image is not present"),
        Rule(docker.errors.APIError, ImageError, explain=redacted_line),
    ]
    with map_exceptions(rules, f"image {image}", chain=False):
        client.images.get(image)
    return digest
