"""The harness is real: test images behave as specified in a real dockerd, nginx really proxies and reloads."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.containers import LABEL_APP, LABEL_TEST, RunningContainer, wait_http
from tests.support.images import HASH_LABEL, TEST_IMAGE_LABEL, build_inputs_hash, build_test_image
from tests.support.net import free_port
from tests.support.nginx import NginxInstance
from tests.support.wait import wait_until


def _started(rc: RunningContainer) -> RunningContainer:
    rc.wait_ready(timeout=15)
    return rc


def _read_sse(url: str, timeout: float = 20.0) -> tuple[httpx.Response, list[tuple[float, str]]]:
    """Events of an SSE response with the monotonic time each was complete on our side."""
    events: list[tuple[float, str]] = []
    with httpx.stream("GET", url, timeout=timeout) as r:
        buf = ""
        for chunk in r.iter_raw():
            buf += chunk.decode()
            while "\n\n" in buf:
                event, buf = buf.split("\n\n", 1)
                events.append((time.monotonic(), event))
    return r, events


# --------------------------------------------------------------------------- images


def test_images_are_built_labelled_and_cached(docker_client: Any, test_images: dict[str, str]) -> None:
    assert set(test_images) == {"v1", "v2", "slow", "never", "crash"}
    for name, tag in test_images.items():
        assert tag == f"bgtest:{name}"
        img = docker_client.images.get(tag)
        assert img.labels[TEST_IMAGE_LABEL] == "1"
        assert len(img.labels[HASH_LABEL]) == 64
    v1 = docker_client.images.get("bgtest:v1")
    assert v1.labels[HASH_LABEL] == build_inputs_hash("v1", "up", 0)
    assert docker_client.images.get("bgtest:v2").id != v1.id
    t0 = time.monotonic()
    assert build_test_image(docker_client, "bgtest:v1", version="v1") == v1.id  # cache hit: no build
    assert time.monotonic() - t0 < 5


def test_health_up_version_and_root(run_container: Any, test_images: dict[str, str]) -> None:
    plain = _started(run_container(test_images["v1"]))
    colored = _started(run_container(test_images["v2"], env={"BLUEGREEN_COLOR": "blue"}))

    r = plain.wait_http("/actuator/health", 200, timeout=10)
    assert r.json() == {"status": "UP"}
    assert r.headers["content-type"] == "application/json"
    assert httpx.get(plain.base_url + "/").text == "v1\n"
    assert httpx.get(plain.base_url + "/version").text == "v1\n"

    assert httpx.get(colored.base_url + "/version").text == "v2 blue\n"
    r = httpx.get(colored.base_url + "/")
    assert (r.text, r.headers["x-app-version"], r.headers["x-app-color"]) == ("v2\n", "v2", "blue")
    info = httpx.get(colored.base_url + "/info").json()
    assert info["version"] == "v2" and info["color"] == "blue" and info["health"] == "up"
    assert colored.container.id.startswith(info["hostname"])
    assert httpx.get(plain.base_url + "/no/such/path").status_code == 404


def test_env_injection_is_readable(run_container: Any, test_images: dict[str, str]) -> None:
    rc = _started(
        run_container(test_images["v1"], env={"FOO": "bar baz", "DB_URL": "mongodb://db:27017/x?a=1"})
    )
    assert httpx.get(rc.base_url + "/env?FOO").text == "bar baz"
    assert httpx.get(rc.base_url + "/env?name=DB_URL").text == "mongodb://db:27017/x?a=1"
    assert httpx.get(rc.base_url + "/env?NOT_SET_ANYWHERE").status_code == 404
    assert httpx.get(rc.base_url + "/env?bad-name").status_code == 400
    listing = httpx.get(rc.base_url + "/env").text.splitlines()
    assert "FOO=bar baz" in listing


@pytest.mark.slow
def test_health_slow_turns_up_after_its_delay(run_container: Any, test_images: dict[str, str]) -> None:
    t0 = time.monotonic()
    rc = _started(run_container(test_images["slow"]))
    r = httpx.get(rc.base_url + "/actuator/health")
    assert (r.status_code, r.json()) == (503, {"status": "DOWN"})
    r = rc.wait_http("/actuator/health", 200, timeout=15)
    assert r.json() == {"status": "UP"}
    elapsed = time.monotonic() - t0
    assert 2.5 <= elapsed < 10, elapsed
    assert httpx.get(rc.base_url + "/").text == "slow\n"


def test_health_never_stays_down(run_container: Any, test_images: dict[str, str]) -> None:
    rc = _started(run_container(test_images["never"]))
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        r = httpx.get(rc.base_url + "/actuator/health")
        assert (r.status_code, r.json()) == (503, {"status": "DOWN"})
        time.sleep(0.2)
    assert httpx.get(rc.base_url + "/version").text == "never\n"  # the app itself answers


def test_crash_image_exits_after_a_second(run_container: Any, test_images: dict[str, str]) -> None:
    t0 = time.monotonic()
    rc = run_container(test_images["crash"])
    wait_until(lambda: rc.status() == "exited", timeout=15, message="crash container exited")
    assert time.monotonic() - t0 >= 0.9
    rc.container.reload()
    assert rc.container.attrs["State"]["ExitCode"] == 3
    assert "crashing on purpose" in rc.logs()


def test_sse_streams_incrementally(run_container: Any, test_images: dict[str, str]) -> None:
    rc = _started(run_container(test_images["v1"]))
    t0 = time.monotonic()
    r, events = _read_sse(rc.base_url + "/sse?n=5&ms=400")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert [e for _, e in events] == [f"id: {i}\ndata: v1 {i}" for i in range(1, 6)]
    first, last = events[0][0] - t0, events[-1][0] - t0
    # 4 gaps of 400 ms: the last event is sent ~1.6 s after the first; the first must not wait for it.
    assert first < 1.0, first
    assert last - first >= 1.4, (first, last)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(events)]
    assert all(g >= 0.25 for g in gaps), gaps


# --------------------------------------------------------------------------- nginx


def test_nginx_starts_with_placeholder_and_passes_t(nginx: NginxInstance, app_name: str) -> None:
    assert nginx.running
    assert nginx.pid_path.read_text().strip() == str(nginx.process.pid if nginx.process else "")
    assert nginx.upstream_file(app_name) == nginx.dir / "conf.d" / f"{app_name}.upstream.conf"
    assert f"upstream {app_name}" in nginx.upstream_file(app_name).read_text()
    assert nginx.test_command[-1] == "-t" and nginx.reload_command[-2:] == ["-s", "reload"]
    t = subprocess.run(nginx.test_command, capture_output=True, text=True, timeout=30)
    assert t.returncode == 0, t.stderr
    assert "test is successful" in t.stderr
    # Nothing routed yet: the placeholder upstream is down.
    assert httpx.get(nginx.public_url + "/").status_code == 502
    r = httpx.get(f"{nginx.control_url}/bluegreen/{app_name}/actuator/health")
    assert r.status_code == 502
    assert r.headers["x-bluegreen-upstream"] == app_name


def test_nginx_t_rejects_a_broken_include(nginx: NginxInstance, app_name: str) -> None:
    nginx.upstream_file(app_name).write_text(f"upstream {app_name} {{ server 127.0.0.1:notaport; }}\n")
    r = subprocess.run(nginx.test_command, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "invalid port" in r.stderr or "emerg" in r.stderr


def test_nginx_routes_and_reloads_between_containers(
    nginx: NginxInstance, app_name: str, run_container: Any, test_images: dict[str, str]
) -> None:
    blue = _started(run_container(test_images["v1"], env={"BLUEGREEN_COLOR": "blue", "FOO": "from-blue"}))
    green = _started(run_container(test_images["v2"], env={"BLUEGREEN_COLOR": "green"}))
    blue.wait_http()
    green.wait_http()

    for rc, version in ((blue, "v1 blue\n"), (green, "v2 green\n"), (blue, "v1 blue\n")):
        # What the controller does: write the include, nginx -t, nginx -s reload, confirm via the control URL.
        nginx.write_upstream(app_name, [f"127.0.0.1:{rc.host_port}"], extra="    keepalive 16;\n")
        subprocess.run(nginx.test_command, check=True, capture_output=True, timeout=30)
        subprocess.run(nginx.reload_command, check=True, capture_output=True, timeout=30)

        # The reload is asynchronous (an old worker may still answer for a moment): poll, like the controller.
        def serves(version: str = version) -> bool:
            return httpx.get(nginx.public_url + "/version").text == version

        wait_until(serves, timeout=10, message=f"public URL serves {version!r}")
        want = f"127.0.0.1:{rc.host_port}"

        def routed(want: str = want) -> httpx.Response | None:
            resp = httpx.get(f"{nginx.control_url}/bluegreen/{app_name}/actuator/health")
            return resp if resp.headers.get("x-bluegreen-upstream") == want else None

        r = wait_until(routed, timeout=10, message=f"control URL routes through {want}")
        assert r is not None
        assert r.status_code == 200 and r.json() == {"status": "UP"}
        # Once reload() has returned, old workers no longer accept: every request sees the new route.
        nginx.reload()
        for _ in range(5):
            r = httpx.get(f"{nginx.control_url}/bluegreen/{app_name}/version")
            assert (r.text, r.headers["x-bluegreen-upstream"]) == (version, want)

    # Query strings survive the control server's variable proxy_pass.
    assert httpx.get(f"{nginx.control_url}/bluegreen/{app_name}/env?FOO").text == "from-blue"
    assert "[emerg]" not in nginx.error_log_text()


def test_sse_streams_through_nginx(
    nginx: NginxInstance, app_name: str, run_container: Any, test_images: dict[str, str]
) -> None:
    rc = _started(run_container(test_images["v2"]))
    nginx.write_upstream(app_name, [f"127.0.0.1:{rc.host_port}"])
    nginx.reload()
    wait_until(lambda: httpx.get(nginx.public_url + "/").text == "v2\n", timeout=10)
    t0 = time.monotonic()
    r, events = _read_sse(nginx.public_url + "/sse?n=4&ms=500")
    assert r.status_code == 200, nginx.error_log_text()[-3000:]
    assert [e for _, e in events] == [f"id: {i}\ndata: v2 {i}" for i in range(1, 5)]
    assert events[0][0] - t0 < 1.0
    assert events[-1][0] - events[0][0] >= 1.2


def test_nginx_stop_ends_every_process(tmp_path: Path) -> None:
    inst = NginxInstance.start(tmp_path / "ng", ["alpha", "beta-2"])
    try:
        assert inst.public_url_for("alpha") != inst.public_url_for("beta-2")
        pid = int(inst.pid_path.read_text())
        workers = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        assert workers, "no worker process"
    finally:
        inst.stop()
    for p in [pid, *map(int, workers)]:
        assert not os.path.exists(f"/proc/{p}") or "zombie" in Path(f"/proc/{p}/status").read_text().lower()
    with pytest.raises(httpx.ConnectError):
        httpx.get(inst.control_url + "/")


# --------------------------------------------------------------------------- cleanup

_left_behind: dict[str, str] = {}


def test_cleanup_part1_start_containers(
    docker_client: Any,
    app_name: str,
    run_container: Any,
    test_images: dict[str, str],
    session_labels: dict[str, str],
) -> None:
    # As the controller would: a container carrying only bluegreen.app=<app_name>.
    c = docker_client.containers.run(
        test_images["v1"],
        detach=True,
        labels={LABEL_APP: app_name, **session_labels},
        name=f"{app_name}-blue",
    )
    rc = run_container(test_images["v1"])
    _left_behind.update(app=app_name, controller_made=c.id, harness_made=rc.id)
    assert rc.container.labels[LABEL_TEST] == session_labels[LABEL_TEST]


def test_cleanup_part2_nothing_left(docker_client: Any, session_id: str) -> None:
    if not _left_behind:
        pytest.skip("runs after test_cleanup_part1_start_containers")
    ids = {c.id for c in docker_client.containers.list(all=True)}
    assert _left_behind["controller_made"] not in ids
    assert _left_behind["harness_made"] not in ids
    assert not docker_client.containers.list(
        all=True, filters={"label": f"{LABEL_APP}={_left_behind['app']}"}
    )


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_wait_http_times_out_clearly() -> None:
    port = free_port()
    with pytest.raises(TimeoutError, match="did not answer 200"):
        wait_http(f"http://127.0.0.1:{port}/", timeout=0.3)
