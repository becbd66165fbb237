"""Image pulls: a real registry (Debian's `docker-registry`) on loopback, real dockerd, moto for ECR tokens.

- Deploy from the registry: push a locally built test image, delete it locally, `--once` pulls it
  (JSON log events), and status shows the registry digest the container really runs.
- A failed pull (nonexistent tag) is one line, exit 1, nothing changed.
- The ECR path: GetAuthorizationToken against moto -> decoded auth_config -> a real pull from a registry
  that demands exactly those credentials (htpasswd), and the same pull without them fails.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.drivers.registry import (
    Progress,
    auth_for,
    decode_ecr_token,
    ecr_auth_config,
    ecr_registry,
    pull_image,
)
from controller.kernel.errors import ImageError
from controller.kernel.imageref import ImageRef
from controller.kernel.logs import MASK, redact_text
from tests.conftest import _unavailable
from tests.support.controller_run import World, condition
from tests.support.moto import ACCOUNT, REGION
from tests.support.nginx import NginxInstance
from tests.support.registry import Registry, RegistryUnavailable

ECR_HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("image", "repo", "ref", "host"),
    [
        ("dialogue:1.4.2", "dialogue", "1.4.2", None),
        ("dialogue", "dialogue", "latest", None),
        ("team/dialogue:1", "team/dialogue", "1", None),
        ("127.0.0.1:5000/dialogue", "127.0.0.1:5000/dialogue", "latest", "127.0.0.1:5000"),
        ("localhost/x:2", "localhost/x", "2", "localhost"),
        (f"{ECR_HOST}/dialogue:1", f"{ECR_HOST}/dialogue", "1", ECR_HOST),
        ("ghcr.io/a/b@sha256:" + "a" * 64, "ghcr.io/a/b", "sha256:" + "a" * 64, "ghcr.io"),
        ("ghcr.io/a/b:1@sha256:" + "b" * 64, "ghcr.io/a/b", "sha256:" + "b" * 64, "ghcr.io"),
    ],
)
def test_references(image: str, repo: str, ref: str, host: str | None) -> None:
    parsed = ImageRef.parse(image)  # what pull_image and auth_for use
    assert parsed.pull_args() == (repo, ref)
    assert parsed.registry == host


def test_a_reference_the_pull_cannot_read_is_an_image_error() -> None:
    """The spec's pattern lets `Team/x` through; the pull must say so in one line, not crash."""
    with pytest.raises(ImageError) as e:
        auth_for("Team/x:1")
    assert str(e.value) == "image Team/x:1: 'Team/x:1' is not a valid image reference (upper case in the repository name)"
    with pytest.raises(ImageError):
        pull_image(None, "Team/x:1")  # refused before the Engine is asked


def test_ecr_hosts() -> None:
    assert ecr_registry(ECR_HOST) == (ACCOUNT, REGION)
    assert ecr_registry(f"{ACCOUNT}.dkr.ecr-fips.us-east-1.amazonaws.com") == (ACCOUNT, "us-east-1")
    assert ecr_registry(f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn") == (ACCOUNT, "cn-north-1")
    assert ecr_registry("public.ecr.aws") is None and ecr_registry("127.0.0.1:5000") is None
    assert ecr_registry(f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com.evil.example") is None
    assert auth_for("127.0.0.1:5000/x:1") is None and auth_for("dialogue:1") is None  # host's ~/.docker/config.json


def test_decode_rejects_garbage_without_echoing_it() -> None:
    with pytest.raises(ImageError) as e:
        decode_ecr_token({"authorizationToken": "bm90LWEtcGFpcg=="}, ECR_HOST)  # "not-a-pair"
    assert "not-a-pair" not in str(e.value) and ECR_HOST in str(e.value)


# --------------------------------------------------------------------------- fixtures




def _start_registry(root: Path, auth: tuple[str, str] | None = None) -> Registry:
    try:
        return Registry.start(root, auth)
    except RegistryUnavailable as e:
        _unavailable(str(e))
        raise


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with _start_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def _push(client: Any, source: str, target_repo: str, tag: str, auth: dict[str, str] | None = None) -> None:
    client.images.get(source).tag(target_repo, tag)
    for ev in client.api.push(target_repo, tag=tag, stream=True, decode=True, auth_config=auth):
        assert "error" not in ev, ev
    _untag(client, f"{target_repo}:{tag}")


def _untag(client: Any, ref: str) -> None:
    """Remove a tag and the image's digest references of that repository, so the next use must pull."""
    import docker.errors

    repo = ref.rsplit(":", 1)[0]
    try:
        img = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return
    for r in [ref, *[d for d in img.attrs.get("RepoDigests") or [] if d.startswith(repo + "@")]]:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(r, noprune=True)


# --------------------------------------------------------------------------- ECR token path against moto


def test_ecr_token_from_moto_is_decoded_and_redacted(aws_env: dict[str, str]) -> None:
    auth = ecr_auth_config(ECR_HOST)
    assert auth == {"username": "AWS", "password": f"{ACCOUNT}-auth-token", "serveraddress": f"https://{ECR_HOST}"}
    assert redact_text(f"login {auth['password']}") == f"login {MASK}"
    assert auth_for(f"{ECR_HOST}/dialogue:1") == auth  # what DockerDriver.ensure_image passes to the pull


def test_ecr_token_failure_is_one_image_error(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ImageError) as e:
        auth_for(f"{ECR_HOST}/dialogue:1")
    assert str(e.value).startswith(f"ECR registry {ECR_HOST}: GetAuthorizationToken: no AWS credentials")


def test_ecr_auth_config_pulls_from_a_registry_that_demands_it(
    aws_env: dict[str, str], docker_client: Any, test_images: dict[str, str], tmp_path: Path
) -> None:
    """The token moto hands out is the registry's htpasswd login: a real authenticated pull."""
    auth = ecr_auth_config(ECR_HOST)
    with _start_registry(tmp_path / "reg", (auth["username"], auth["password"])) as reg:
        repo = f"{reg.host}/ecr{uuid.uuid4().hex[:8]}"
        login = {"username": auth["username"], "password": auth["password"], "serveraddress": reg.host}
        _push(docker_client, test_images["v1"], repo, "v1", login)
        try:
            with pytest.raises(ImageError) as e:
                pull_image(docker_client.api, f"{repo}:v1", auth_config=None)
            assert "no basic auth credentials" in str(e.value) or "unauthorized" in str(e.value).lower(), e.value
            digest = pull_image(docker_client.api, f"{repo}:v1", auth_config={**auth, "serveraddress": reg.host})
            assert digest == reg.manifest_digest(repo.split("/", 1)[1], "v1")
            assert docker_client.images.get(f"{repo}:v1").id == docker_client.images.get(test_images["v1"]).id
        finally:
            _untag(docker_client, f"{repo}:v1")
    token = base64.b64encode(f"AWS:{auth['password']}".encode()).decode()
    assert decode_ecr_token({"authorizationToken": token}, ECR_HOST)["password"] == auth["password"]


# --------------------------------------------------------------------------- deploys from a registry


@pytest.fixture
def pworld(
    registry: Registry, docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str
) -> Iterator[tuple[World, str]]:
    repo = f"{registry.host}/{app_name}"
    _push(docker_client, test_images["v1"], repo, "v1")
    w = World(docker_client, app_name, nginx, tmp_path, session_id)
    w.set(image=f"{repo}:v1")
    yield w, repo
    for color in ("blue", "green"):
        c = w.container(color)
        if c is not None:
            c.remove(force=True)
    _untag(docker_client, f"{repo}:v1")


def test_deploy_pulls_a_missing_image_and_status_shows_its_digest(pworld: tuple[World, str], registry: Registry, docker_client: Any) -> None:
    import docker.errors

    w, repo = pworld
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(f"{repo}:v1")
    r = w.once()
    w.assert_converged_on("blue", "v1")
    events = [e.get("event") for e in r.logs()]
    assert "image.pull.start" in events and "image.pull.done" in events, r.explain()
    done = next(e for e in r.logs() if e.get("event") == "image.pull.done")
    digest = registry.manifest_digest(repo.split("/", 1)[1], "v1")
    assert done["digest"] == digest and done["image"] == f"{repo}:v1"
    blue = w.status()["observed"]["containers"]["blue"]
    assert blue["digest"] == f"{repo}@{digest}"
    text = w.run("--status")
    assert f"digest {repo}@{digest}" in text.stdout, text.explain()
    # Present now: the next run pulls nothing.
    again = w.once()
    assert "image.pull.start" not in [e.get("event") for e in again.logs()]


def test_failed_pull_is_one_line_and_changes_nothing(pworld: tuple[World, str]) -> None:
    w, repo = pworld
    w.once()
    w.assert_serving("blue", "v1")
    w.set(image=f"{repo}:does-not-exist", activeColor="green")
    before = w.snapshot()
    r = w.once(expect=1)
    lines = [m for m in r.messages() if "cannot be pulled" in m]
    assert len(lines) == 1, r.explain()
    assert lines[0].startswith(f"reconcile: {w.app}: image {repo}:does-not-exist is not present locally and cannot be pulled: ")
    assert "manifest unknown" in lines[0] or "not found" in lines[0], lines[0]
    after = w.snapshot()
    assert (after.containers, after.include, after.marker, after.workers) == (
        before.containers, before.include, before.marker, before.workers
    )
    w.assert_serving("blue", "v1")
    assert w.container("green") is None
    status = w.status()
    assert condition(status, "Degraded")["reason"] == "ImageError"


def test_progress_on_a_terminal_is_one_updating_line(tmp_path: Path) -> None:
    class Tty:
        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, s: str) -> int:
            self.text += s
            return len(s)

        def flush(self) -> None:
            pass

    out = Tty()
    p = Progress("x:1", stream=out)  # type: ignore[arg-type]
    p.update({"status": "Downloading", "id": "abc", "progressDetail": {"current": 1_000_000, "total": 2_000_000}})
    p.update({"status": "Digest: sha256:" + "c" * 64})
    p.finish(True)
    assert out.text.startswith("\rpulling x:1: 0/1 layers, 1.0/2.0 MB") and out.text.endswith("\n")
    assert p.digest == "sha256:" + "c" * 64
