"""The command line on a real host: the one-writer lock (item 9), logs (item 11), a directory of specs.

Runs `python -m controller` as a real subprocess (under a pseudo-terminal where the terminal matters).
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.containers import LABEL_APP, remove_containers
from tests.support.controller_run import (
    ROOT,
    World,
    app_spec,
    command,
    read,
    routed_color,
    run_reconcile,
    served_version,
    subprocess_env,
    write_spec,
)
from tests.support.nginx import NginxInstance

pytestmark = [pytest.mark.docker, pytest.mark.nginx]

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def world(docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str) -> Callable[..., World]:
    def make(**spec: Any) -> World:
        return World(docker_client, app_name, nginx, tmp_path, session_id, **spec)

    return make


class PtyRun:
    """`python -m controller ...` with stdout and stderr on a pseudo-terminal; output collected by a thread."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=subprocess_env(None), cwd=str(ROOT), close_fds=True)
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO once the child side is closed
                return
            if not data:
                return
            self._chunks.append(data)

    @property
    def text(self) -> str:
        return ANSI.sub("", b"".join(self._chunks).decode(errors="replace")).replace("\r\n", "\n")

    def wait_text(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{needle!r} not shown within {timeout:g}s; output so far:\n{self.text[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        os.close(self._master)
        return code


def test_lock_one_writer_bounded_wait_and_no_stale_lock_after_kill_9(world: Callable[..., World]) -> None:
    w = world(healthCheck={"timeoutSeconds": 30})
    w.once()
    w.set(image="bgtest:never", activeColor="green")  # a deploy that holds the lock in its health wait
    holder = PtyRun(command(w.spec_path, w.state, "--once"))
    try:
        lock = w.state / "lock"
        deadline = time.monotonic() + 20
        while (read(lock) or "").strip() != str(holder.proc.pid):
            assert time.monotonic() < deadline and holder.proc.poll() is None, holder.text
            time.sleep(0.05)
        holder.wait_text("action.start", timeout=20)

        # A second run waits --lock-timeout, then exits 1 with one clear line naming the holder.
        second = w.run("--once", "--lock-timeout", "1")
        assert second.returncode == 1, second.explain()
        assert 1.0 <= second.elapsed < 15, second.explain()
        assert second.messages() == [
            f"reconcile: another reconcile holds {lock} (pid {holder.proc.pid}); waited 1s (--lock-timeout)"
        ], second.explain()
        assert second.stdout == ""
        # Readers do not take the lock.
        plan = w.run("--plan")
        assert plan.returncode == 1 and "CreateContainer" not in plan.stdout and "WaitHealthy" in plan.stdout, plan.explain()

        # On a terminal, logs are readable lines (not JSON) and the health wait shows progress.
        holder.wait_text("health.waiting", timeout=15)
        text = holder.text
        assert not any(line.lstrip().startswith("{") for line in text.splitlines() if line.strip()), text
        assert "action.start" in text and "app=" + w.app in text and "color=green" in text and "reconcile_id=" in text
        assert "left=" in text and "elapsed=" in text
    finally:
        assert holder.kill() == -signal.SIGKILL

    # The killed holder leaves no stale lock: the next run gets it at once and converges the fixed spec.
    assert (read(w.state / "lock") or "").strip() == str(holder.proc.pid)  # the file stays; flock does not
    w.set(image="bgtest:v2")
    r = w.once("--lock-timeout", "0")
    w.assert_serving("green", "v2")
    assert r.elapsed < 20


def test_logs_are_json_lines_off_a_terminal_and_console_on_request(world: Callable[..., World]) -> None:
    w = world()
    r = w.once()
    logs = r.logs()
    assert logs and len(logs) == len([ln for ln in r.stderr.splitlines() if ln.strip()]), r.stderr  # JSON only
    rids = {line["reconcile_id"] for line in logs}
    assert len(rids) == 1 and re.fullmatch(r"[0-9a-f]{12}", rids.pop())
    for line in logs:
        assert line["app"] == w.app and line["image"] == "bgtest:v1", line
        assert {"event", "level", "timestamp"} <= set(line)
    actions = [line for line in logs if line["event"].startswith("action.")]
    assert {line["action"] for line in actions} >= {"CreateContainer", "WaitHealthy", "SwitchRoute", "WriteMarker"}
    assert all(line["color"] == "blue" for line in actions)
    assert [line["event"] for line in logs][-1] == "reconcile.done" and logs[-1]["result"] == "converged"

    w.set(image="bgtest:v2", activeColor="green")
    c = w.run("--once", "--log-format", "console")
    assert c.returncode == 0, c.explain()
    lines = [ANSI.sub("", ln) for ln in c.stderr.splitlines() if ln.strip()]
    assert lines and not any(ln.startswith("{") for ln in lines), c.stderr
    starts = [ln for ln in lines if "action.start" in ln]
    assert starts and all(f"app={w.app}" in ln and "color=green" in ln and "image=bgtest:v2" in ln for ln in starts), lines
    assert all("reconcile_id=" in ln for ln in lines if "app=" in ln)
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", lines[0])

    # A failure, in JSON: the error line carries the same context.
    w.set(image="bgtest:never", activeColor="blue", healthCheck={"timeoutSeconds": 1})
    f = w.run("--once")
    assert f.returncode == 1, f.explain()
    failed = [line for line in f.logs() if line["event"] == "action.failed"]
    assert failed and failed[0]["color"] == "blue" and failed[0]["image"] == "bgtest:never" and "did not pass" in failed[0]["error"]
    assert failed[0]["level"] == "error" and failed[0]["reconcile_id"]


def test_directory_with_a_broken_spec_converges_the_good_apps_and_exits_2(
    docker_client: Any, test_images: dict[str, str], app_name: str, tmp_path: Path, session_id: str
) -> None:
    other = f"{app_name}-b"
    inst = NginxInstance.start(tmp_path / "nginx2", [app_name, other])
    try:
        specs = tmp_path / "specs"
        docs = {
            app_name: app_spec(app_name, inst, tmp_path, "bgtest:v1", "blue", session_id=session_id),
            other: app_spec(other, inst, tmp_path, "bgtest:v2", "green", session_id=session_id),
        }
        for name, doc in docs.items():
            write_spec(specs / f"{name}.yaml", doc)
        broken = app_spec("broken", inst, tmp_path, "bgtest:v1", "blue", session_id=session_id)
        broken["spec"]["colour"] = "blue"
        write_spec(specs / "broken.yaml", broken)
        (specs / "notes.txt").write_text("not a spec")

        state = tmp_path / "state"
        r = run_reconcile(specs, state, "--once")
        assert r.returncode == 2, r.explain()
        assert r.messages() == [f"reconcile: {specs / 'broken.yaml'}: spec.colour: unknown field"], r.explain()
        assert sorted(r.stdout.splitlines()) == sorted(f"{n}: converged (4 actions)" for n in docs), r.stdout
        for name, color, version in ((app_name, "blue", "v1"), (other, "green", "v2")):
            assert served_version(inst, name) == version
            assert routed_color(inst, name, docs[name]["spec"]["ports"]) == color
            assert read(Path(docs[name]["spec"]["marker"])) == f"{color}\n"
        # Each app got its own reconcile id; the broken one touched nothing.
        ids = {line["app"]: line["reconcile_id"] for line in r.logs() if "app" in line}
        assert set(ids) == set(docs) and len(set(ids.values())) == 2
        assert docker_client.containers.list(all=True, filters={"name": "broken-"}) == []

        # Still exit 2 on the next run, while the good apps stay converged and untouched.
        again = run_reconcile(specs, state, "--once")
        assert again.returncode == 2 and sorted(again.stdout.splitlines()) == sorted(f"{n}: converged" for n in docs)
        status = run_reconcile(specs, state, "--status", "--json")
        assert status.returncode == 2, status.explain()
        assert sorted(s["app"] for s in json.loads(status.stdout)) == sorted(docs)
    finally:
        inst.stop()
        remove_containers(docker_client, [{"label": f"{LABEL_APP}={other}"}])
