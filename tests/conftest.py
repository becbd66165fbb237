"""Shared fixtures: a real dockerd, real test images, a private real nginx, and cleanup of what tests start.

Fixtures
--------
docker_client (session)   docker.DockerClient; skips (fails when BLUEGREEN_REQUIRE_DOCKER=1) if no daemon.
test_images (session)     dict short name -> tag: v1, v2 (health up), slow (UP 3 s after start), never, crash;
                          the version each serves is its short name (bgtest:v1 serves "v1").
session_id (session)      this session's id; every test container carries label bluegreen.test=<session_id>.
session_labels (session)  {"bluegreen.test": session_id}: put these on anything a test creates
                          (AppSpec.labels accepts bluegreen.test).
app_name                  unique app name per test ("t" + 8 hex); containers labelled bluegreen.app=<app_name>
                          are force-removed when the test ends.
captured_logs             structlog events logged during the test, as dicts (structlog.testing.capture_logs;
                          the logging configuration is restored afterwards: no global reconfiguration).
nginx                     tests.support.nginx.NginxInstance serving app_name; stopped when the test ends.
run_container             factory: run_container(image, *, env=None, host_port=None, name=None, **kwargs)
                          -> RunningContainer (docker run -d -p 127.0.0.1:<free port>:8081, session label);
                          removed when the test ends.

Markers ``docker`` and ``nginx`` are added automatically to tests using those fixtures.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.containers import (  # noqa: E402
    LABEL_APP,
    LABEL_TEST,
    RunningContainer,
    remove_containers,
    run_test_container,
)
from tests.support.images import BusyboxMissingError, build_standard_images, pin_images  # noqa: E402
from tests.support.nginx import NGINX_BIN, NginxInstance  # noqa: E402

SESSION_ID = f"s{uuid.uuid4().hex[:12]}"
REQUIRE_ENV = "BLUEGREEN_REQUIRE_DOCKER"

_app_names: set[str] = set()
_docker: dict[str, Any] = {}  # "client" once connected, "error" once failed

DOCKER_FIXTURES = {"docker_client", "test_images", "run_container"}
NGINX_FIXTURES = {"nginx"}


def _require_real_parts() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def _unavailable(message: str) -> None:
    """Skip, or fail when the run requires the real parts (CI)."""
    if _require_real_parts():
        pytest.fail(f"{message} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(message)


def _connect_docker() -> Any:
    if "client" in _docker:
        return _docker["client"]
    if "error" in _docker:
        raise RuntimeError(_docker["error"])
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as e:
        _docker["error"] = f"docker daemon unreachable: {e}"
        raise RuntimeError(_docker["error"]) from e
    _docker["client"] = client
    return client


def _cleanup_app(app: str) -> None:
    if "client" not in _docker:
        try:
            _connect_docker()
        except RuntimeError:
            return
    remove_containers(_docker["client"], [{"label": f"{LABEL_APP}={app}"}])


# --------------------------------------------------------------------------- hooks


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & DOCKER_FIXTURES:
            item.add_marker(pytest.mark.docker)
        if names & NGINX_FIXTURES:
            item.add_marker(pytest.mark.nginx)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    client = _docker.get("client")
    if client is None:
        return
    filters = [{"label": f"{LABEL_TEST}={SESSION_ID}"}]
    filters += [{"label": f"{LABEL_APP}={app}"} for app in sorted(_app_names)]
    remove_containers(client, filters)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    import structlog.testing

    with structlog.testing.capture_logs() as logs:
        yield logs


@pytest.fixture(scope="session")
def session_id() -> str:
    return SESSION_ID


@pytest.fixture(scope="session")
def session_labels() -> dict[str, str]:
    return {LABEL_TEST: SESSION_ID}


@pytest.fixture(scope="session")
def docker_client() -> Any:
    try:
        return _connect_docker()
    except RuntimeError as e:
        _unavailable(f"{e}; start it with `sudo scripts/setup.sh`")


@pytest.fixture(scope="session")
def test_images(docker_client: Any) -> dict[str, str]:
    try:
        tags = build_standard_images(docker_client)
    except BusyboxMissingError as e:
        _unavailable(str(e))
        raise
    # A test app whose spec keeps the default `keepImages` would otherwise prune the images other tests use.
    pin_images(docker_client, list(tags.values()), {LABEL_TEST: SESSION_ID})
    return tags


@pytest.fixture
def app_name() -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:8]}"
    _app_names.add(name)
    yield name
    _cleanup_app(name)


@pytest.fixture
def nginx(tmp_path: Path, app_name: str) -> Iterator[NginxInstance]:
    if not (os.path.isfile(NGINX_BIN) and os.access(NGINX_BIN, os.X_OK)):
        _unavailable(f"nginx binary {NGINX_BIN} not found; install nginx-light (scripts/setup.sh)")
    inst = NginxInstance.start(tmp_path / "nginx", [app_name])
    try:
        yield inst
    finally:
        inst.stop()


@pytest.fixture
def shipped_site(tmp_path: Path, app_name: str, nginx: NginxInstance) -> Iterator[NginxInstance]:
    """A private nginx with the SHIPPED site of nginx/ for `app_name` (tests/support/shipped_site.py), Basic Auth
    users SHIPPED_USERS. `nginx` (the plain harness site) only makes sure the binary exists (skipped/failed alike)."""
    from tests.support.shipped_site import SHIPPED_USERS, start_shipped

    inst = start_shipped(tmp_path / "shipped", [app_name], SHIPPED_USERS)
    try:
        yield inst
    finally:
        inst.stop()


@pytest.fixture
def run_container(docker_client: Any, app_name: str) -> Iterator[Callable[..., RunningContainer]]:
    started: list[RunningContainer] = []

    def run(
        image: str,
        *,
        env: dict[str, str] | None = None,
        host_port: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> RunningContainer:
        labels = {LABEL_TEST: SESSION_ID, **kwargs.pop("labels", {})}
        rc = run_test_container(
            docker_client, image, labels=labels, host_port=host_port, env=env, name=name, **kwargs
        )
        started.append(rc)
        return rc

    yield run
    import docker.errors

    for rc in started:
        try:
            rc.container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            pass


# --------------------------------------------------------------------------- moto (SSM, ECR) for the secrets and pull tests


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real `moto_server` on a free loopback port (tests/support/moto.py)."""
    from tests.support.moto import MotoServer, MotoUnavailable

    try:
        server = MotoServer.start(tmp_path_factory.mktemp("moto"))
    except MotoUnavailable as e:
        _unavailable(str(e))
        raise
    with server:
        yield server


@pytest.fixture
def aws_env(moto: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this process's boto3 at moto (for code called in-process)."""
    from tests.support.moto import AWS_ENV_KEYS

    env: dict[str, str] = moto.env()
    for k in AWS_ENV_KEYS:
        monkeypatch.delenv(k, raising=False)
        if k in env:
            monkeypatch.setenv(k, env[k])
    return env
