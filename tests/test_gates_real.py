"""Deploy gates (issue 12 items 2-3) on a real dockerd behind the shipped Nginx site, driven by the real CLI.

- A failing check and a failing beforeSwitch hook keep traffic where it was (Basic Auth site, flag switch),
  the revision is remembered (CheckFailed / HookFailed) and status says why.
- A hook runs exactly once per revision across a retry (a check that failed after the hook passed) and a kill -9
  of the controller while the hook container runs: the next pass finds it by its labels and collects it.
  Runs are counted from Docker's own `start` events of containers labelled as this app's hook.
- Secret values (moto SSM) printed by a hook never reach a log line, status.json or memory.json: not even a
  fragment of 16 characters of a long one (an 800-character JWT, longer than a kept line) or of a multi-line one
  (a PEM key, printed whole by `env`, indented line by line, base64-encoded), nor of one the 64 KiB output cap
  cuts in two, nor the 8-character last row of a PEM key that begins above the 50 lines kept.
"""

from __future__ import annotations

import base64
import json
import secrets as random_secrets
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.controller_run import Run, World, condition, run_reconcile, start_reconcile
from tests.support.moto import REGION, MotoServer
from tests.support.nginx import NginxInstance
from tests.support.shipped_site import start_shipped
from tests.support.wait import kill_9_when, wait_while_running

pytestmark = [pytest.mark.docker, pytest.mark.nginx]

USERS = {"ops": "correct horse"}
AUTH = ("ops", "correct horse")
FAST = {"healthCheck": {"stableSeconds": 0.5, "intervalSeconds": 0.1}}


@pytest.fixture
def shipped(tmp_path: Path, app_name: str, nginx: NginxInstance) -> Iterator[NginxInstance]:
    # `nginx` (the plain harness site) only makes sure the binary exists and is skipped/failed like the rest.
    inst = start_shipped(tmp_path / "shipped", [app_name], USERS)
    try:
        yield inst
    finally:
        inst.stop()


class GateWorld(World):
    def __init__(self, *args: Any, env: dict[str, str] | None = None, **spec: Any) -> None:
        super().__init__(*args, **spec)
        self.set(nginx={"switch": "flag"})  # the shipped site's switch
        self.env = env

    def run(self, *args: str, timeout: float = 60.0) -> Run:
        # A short backoff: the retry of a failed revision is what these tests look at, not its delay.
        r = run_reconcile(
            self.spec_path, self.state, "--log-format", "json", "--backoff-base", "0.1", "--backoff-max", "0.2", *args,
            timeout=timeout, env=self.env,
        )  # fmt: skip
        return r

    def served(self) -> str | None:
        """The version answering through the shipped site's public port (Basic Auth)."""
        try:
            r = httpx.get(self.nginx.public_url_for(self.app) + "/version", auth=AUTH, timeout=3, trust_env=False)
        except httpx.HTTPError:
            return None
        return r.text.split()[0] if r.status_code == 200 and r.text.strip() else None

    def memory(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state / "apps" / self.app / "memory.json").read_text())
        return data

    def hook_containers(self) -> list[Any]:
        # sparse: one list call, no inspect per container (a hook container removed between the two would raise)
        flt = {"label": [f"bluegreen.app={self.app}", "bluegreen.hook"]}
        return list(self.client.containers.list(all=True, sparse=True, filters=flt))

    def hook_starts(self, since: float) -> list[str]:
        """Revisions of this app's hook containers Docker started since `since` (from its event log)."""
        events = self.client.events(
            since=int(since) - 1, until=int(time.time()) + 1, decode=True,
            filters={"type": "container", "event": "start", "label": [f"bluegreen.app={self.app}", "bluegreen.hook"]},
        )  # fmt: skip
        try:
            return [e["Actor"]["Attributes"]["bluegreen.revision"] for e in events]
        finally:
            events.close()


def _world(client: Any, app: str, inst: NginxInstance, tmp_path: Path, session_id: str, **spec: Any) -> GateWorld:
    env = spec.pop("env_", None)
    return GateWorld(client, app, inst, tmp_path, session_id, env=env, **{**FAST, **spec})



def test_failing_gates_keep_traffic_a_retry_does_not_rerun_the_hook_and_secrets_stay_out_of_logs(
    moto: MotoServer, docker_client: Any, test_images: dict[str, str], app_name: str, shipped: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    began = time.time()
    base = f"/{app_name}/prod/"
    secret = f"sk-{uuid.uuid4().hex}"
    moto.client("ssm").put_parameter(Name=base + "API_KEY", Value=secret, Type="SecureString", Overwrite=True)
    w = _world(docker_client, app_name, shipped, tmp_path, session_id, env_=moto.env(region=None), secrets={"ssm": {"path": base, "region": REGION}})
    runs = [w.once()]
    assert (w.served(), w.routed()) == ("v1", "blue")

    # v2 to green: a migration hook that passes (printing the secret it got, on stdout and stderr), an http check
    # that passes and a host command check that fails (and sees the new color's address).
    probe, ready = tmp_path / "seen-target", tmp_path / "smoke-ready"
    migrate = 'echo "migrating $BLUEGREEN_COLOR with key=$API_KEY"; echo "$API_KEY" >&2; sleep 0.2; echo migrated'
    smoke = f'echo "$BLUEGREEN_TARGET_URL" > {probe}; test -e {ready} || {{ echo "smoke: 1 failed"; exit 3; }}'
    w.set(
        image=test_images["v2"],
        activeColor="green",
        hooks={"beforeSwitch": {"command": ["sh", "-c", migrate], "timeoutSeconds": 20}},
        checks={
            "beforeSwitch": [
                {"http": {"path": "/version", "bodyContains": "v2"}},
                {"command": ["/bin/sh", "-c", smoke], "timeoutSeconds": 10},
            ]
        },
    )
    r = w.run("--once", "--log-level", "debug")
    runs.append(r)
    assert r.returncode == 1, r.explain()
    assert probe.read_text().strip() == f"http://127.0.0.1:{w.ports['green']}"
    assert (w.served(), w.routed()) == ("v1", "blue")
    assert (w.marker.read_text(), w.container("green").status) == ("blue\n", "running")
    degraded = condition(w.status(), "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "CheckFailed", degraded
    assert "checks.beforeSwitch[1] (/bin/sh) exited 3: smoke: 1 failed" in degraded["message"]
    assert [f["reason"] for f in w.memory()["failures"].values()] == ["CheckFailed"]
    assert any("smoke: 1 failed" in m for m in r.messages()), r.explain()
    hooks = w.status()["hooks"]
    assert (hooks[0]["phase"], hooks[0]["state"], hooks[0]["exitCode"]) == ("beforeSwitch", "done", 0)
    # Docker keeps stdout and stderr apart: their relative order is not kept, each stream's is.
    assert sorted(hooks[0]["output"]) == sorted(["migrating green with key=[REDACTED]", "[REDACTED]", "migrated"])
    logged = [e["line"] for e in r.logs() if e.get("event") == "hook.output"]
    assert sorted(logged) == sorted(hooks[0]["output"]), r.explain()
    assert w.hook_containers() == []  # removed after its run
    assert len(w.hook_starts(began)) == 1

    # The retry (after the short backoff) runs the checks again, not the hook that passed: v2 takes traffic.
    ready.touch()
    time.sleep(0.3)
    runs.append(w.once())
    assert (w.served(), w.routed()) == ("v2", "green")
    assert len(w.hook_starts(began)) == 1

    # The next revision's hook fails (printing the secret again): traffic stays on v2.
    fail = 'echo "key=$API_KEY"; echo "error: lock held"; exit 5'
    w.set(image=test_images["v1"], activeColor="blue", env={"RELEASE": "3"}, checks={"beforeSwitch": []},
          hooks={"beforeSwitch": {"command": ["sh", "-c", fail], "timeoutSeconds": 20}})  # fmt: skip
    runs.append(w.once(expect=1))
    assert (w.served(), w.routed()) == ("v2", "green")
    degraded = condition(w.status(), "Degraded")
    assert degraded["reason"] == "HookFailed" and "hooks.beforeSwitch (sh) exited 5: error: lock held" in degraded["message"]
    assert w.status()["hooks"][0]["output"] == ["key=[REDACTED]", "error: lock held"]
    assert w.hook_containers() == [] and len(w.hook_starts(began)) == 2

    channels = {f"run{i}.{k}": getattr(x, k) for i, x in enumerate(runs) for k in ("stdout", "stderr")}
    channels.update({str(p): p.read_text(errors="replace") for p in sorted(w.state.rglob("*")) if p.is_file()})
    for where, text in channels.items():
        assert secret not in text, f"the secret leaked into {where}"


def test_a_kill_9_while_the_hook_runs_does_not_run_it_twice(
    docker_client: Any, test_images: dict[str, str], app_name: str, shipped: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    """The killed controller leaves the hook container running; the next pass finds it by its labels and
    collects it instead of starting another."""
    began = time.time()
    hook = {"beforeSwitch": {"command": ["sh", "-c", "echo migrating; sleep 2; echo migrated"], "timeoutSeconds": 30}}
    w = _world(docker_client, app_name, shipped, tmp_path, session_id, hooks=hook, checks={"beforeSwitch": [{"http": {"path": "/version"}}]})
    code, planned = w.plan_json()  # --plan shows the gates between the health wait and the switch
    verbs = [a["action"] for a in planned["actions"]]
    assert code == 1 and verbs[verbs.index("WaitHealthy") + 1 :][:3] == ["RunHook", "RunCheck", "SwitchRoute"], planned
    proc = start_reconcile(w.spec_path, w.state, "--once", stderr_path=tmp_path / "killed.log")
    kill_9_when(lambda: any(c.status == "running" for c in w.hook_containers()), proc, 30, "the hook container runs")
    assert [c.status for c in w.hook_containers()] == ["running"]
    assert w.routed() is None  # nothing switched yet
    r = w.once()
    assert any(e.get("event") == "hook.resumed" for e in r.logs()), r.explain()
    assert (w.served(), w.routed()) == ("v1", "blue")
    assert w.hook_containers() == []
    starts = w.hook_starts(began)
    assert len(starts) == 1, starts
    assert [h["output"] for h in w.status()["hooks"]] == [["migrating", "migrated"]]


def _jwt(length: int) -> str:
    """A JWT-shaped token (three base64url parts) of `length` characters, random."""
    head = "eyJhbGciOiJSUzI1NiJ9"
    sig = base64.urlsafe_b64encode(random_secrets.token_bytes(48)).decode().rstrip("=")
    body = base64.urlsafe_b64encode(random_secrets.token_bytes(length)).decode()[: length - len(head) - len(sig) - 2]
    return f"{head}.{body}.{sig}"


def _pem(lines: int) -> str:
    body = base64.b64encode(random_secrets.token_bytes(48 * lines + 20)).decode()
    rows = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN PRIVATE KEY-----", *rows, "-----END PRIVATE KEY-----"])


def _short_rowed_pem() -> tuple[str, str]:
    """A PEM key whose last base64 row is 8 characters (too short to be masked on its own), and that row."""
    body = base64.b64encode(random_secrets.token_bytes(486)).decode()  # 648 characters: 10 rows of 64, then 8
    rows = [body[i : i + 64] for i in range(0, len(body), 64)]
    assert len(rows[-1]) == 8
    return "\n".join(["-----BEGIN PRIVATE KEY-----", *rows, "-----END PRIVATE KEY-----"]), rows[-1]


def _fragments(secret: str, size: int = 16) -> set[str]:
    """Every `size`-character piece of `secret`, as text and as JSON escapes it (a newline spanned)."""
    return {t[i : i + size] for t in (secret, json.dumps(secret)[1:-1]) for i in range(len(t) - size + 1)}


def test_no_fragment_of_a_long_or_multi_line_secret_printed_by_a_hook_reaches_logs_or_state(
    moto: MotoServer, docker_client: Any, test_images: dict[str, str], app_name: str, shipped: NginxInstance, tmp_path: Path, session_id: str
) -> None:
    base = f"/{app_name}/prod/"
    jwt, pem = _jwt(800), _pem(10)
    assert len(jwt) == 800 and pem.count("\n") == 12
    short_pem, short_row = _short_rowed_pem()
    ssm = moto.client("ssm")
    ssm.put_parameter(Name=base + "API_JWT", Value=jwt, Type="SecureString", Overwrite=True)
    ssm.put_parameter(Name=base + "TLS_KEY", Value=pem, Type="SecureString", Overwrite=True)
    ssm.put_parameter(Name=base + "SIGNING_KEY", Value=short_pem, Type="SecureString", Overwrite=True)
    # beforeSwitch prints its environment (a JWT line longer than a kept line; the PEMs whole) and the PEM
    # indented; afterSwitch the secrets base64-encoded, whole and in `base64`'s 76-column lines.
    env_dump = 'env; echo "$TLS_KEY" | sed "s/^/key> /"; echo dumped'
    encoded = 'printf %s "$API_JWT" | base64 -w0; echo; echo "$API_JWT" | base64; printf %s "$TLS_KEY" | base64 -w0; echo; echo encoded'
    hooks = {"beforeSwitch": {"command": ["sh", "-c", env_dump], "timeoutSeconds": 20},
             "afterSwitch": {"command": ["sh", "-c", encoded], "timeoutSeconds": 20}}  # fmt: skip
    w = _world(docker_client, app_name, shipped, tmp_path, session_id, env_=moto.env(region=None), secrets={"ssm": {"path": base, "region": REGION}}, hooks=hooks)
    runs = [w.once()]
    assert (w.served(), w.routed()) == ("v1", "blue")
    shown = {h["phase"]: h["output"] for h in w.status()["hooks"]}
    assert shown["beforeSwitch"][-1] == "dumped" and "key> [REDACTED]" in shown["beforeSwitch"], shown
    assert shown["afterSwitch"][-1] == "encoded" and "[REDACTED]" in shown["afterSwitch"], shown
    logged = [e["line"] for e in runs[0].logs() if e.get("event") == "hook.output"]
    assert "API_JWT=[REDACTED]" in logged and "TLS_KEY=[REDACTED]" in logged, runs[0].explain()

    # The next revision's hook prints the JWT so that the 64 KiB cap on its output cuts it in two: 8 lines
    # of 8100 characters follow it, so the cap keeps its last ~720 characters.
    cut = 'printf "jwt=%s\\n" "$API_JWT"; x=$(printf "%8099s" "" | tr " " x); for i in 1 2 3 4 5 6 7 8; do echo "$i$x"; done'
    # Its afterSwitch prints the PEM whose last row is 8 characters, then lines enough that only that row and the
    # END line are among the 50 kept.
    tail_cut = 'echo "$SIGNING_KEY"; i=0; while [ $i -lt 48 ]; do echo "filler $i"; i=$((i+1)); done'
    w.set(image=test_images["v2"], activeColor="green", hooks={
        "beforeSwitch": {"command": ["sh", "-c", cut], "timeoutSeconds": 20},
        "afterSwitch": {"command": ["sh", "-c", tail_cut], "timeoutSeconds": 20},
    })  # fmt: skip
    runs.append(w.once())
    # The PEM began above the 50 lines kept: redacted whole all the same (the output is read further back than it
    # is kept), so its short last row is not left bare.
    after = [e["line"] for e in runs[1].logs() if e.get("event") == "hook.output" and e.get("phase") == "afterSwitch"]
    assert len(after) == 49 and after[0] == "[REDACTED]" and after[1] == "filler 0" and after[-1] == "filler 47", after
    assert (w.served(), w.routed()) == ("v2", "green")
    before = next(h for h in w.status()["hooks"] if h["phase"] == "beforeSwitch")  # newest first
    # The line the cut began in is dropped; the others are kept, each cut to 500 characters after redaction.
    assert [ln[:2] for ln in before["output"]] == [f"{i}x" for i in range(1, 9)] and {len(ln) for ln in before["output"]} == {500}, before

    channels = {f"run{i}.{k}": getattr(x, k) for i, x in enumerate(runs) for k in ("stdout", "stderr")}
    channels.update({str(p): p.read_text(errors="replace") for p in sorted(w.state.rglob("*")) if p.is_file()})
    assert any("memory.json" in k for k in channels) and any("history" in k for k in channels), sorted(channels)
    for where, text in channels.items():
        assert short_row not in text, f"SIGNING_KEY: its last row leaked into {where}"
    for name, secret in (("API_JWT", jwt), ("TLS_KEY", pem), ("SIGNING_KEY", short_pem)):
        pieces = _fragments(secret)
        for where, text in channels.items():
            leaked = sorted(f for f in pieces if f in text)
            assert not leaked, f"{name}: {len(leaked)} fragments leaked into {where}, e.g. {leaked[:3]}"


def _hook_events(w: GateWorld, since: float) -> list[tuple[str, str]]:
    """(event, revision) of this app's hook containers since `since`, in Docker's order: start, die."""
    events = w.client.events(
        since=int(since) - 1, until=int(time.time()) + 1, decode=True,
        filters={"type": "container", "event": ["start", "die"], "label": [f"bluegreen.app={w.app}", "bluegreen.hook"]},
    )  # fmt: skip
    try:
        return [(e["status"], e["Actor"]["Attributes"]["bluegreen.revision"]) for e in events]
    finally:
        events.close()


def _killed_mid_hook(w: GateWorld, tmp_path: Path, sig: signal.Signals) -> None:
    """Start a --once run, and send it `sig` once its hook container runs; the hook is left running."""
    proc = start_reconcile(
        w.spec_path, w.state, "--once", env=w.env, stderr_path=tmp_path / f"killed-{sig.name}.log"
    )
    try:
        wait_while_running(
            lambda: any(c.status == "running" for c in w.hook_containers()),
            proc,
            60,
            "the hook container runs",
            interval=0.05,
        )
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_a_spec_change_mid_hook_starts_no_second_migration_and_the_hung_one_is_killed_at_its_timeout(
    docker_client: Any,
    test_images: dict[str, str],
    app_name: str,
    shipped: NginxInstance,
    tmp_path: Path,
    session_id: str,
) -> None:
    """Issue 19 #6: v2's migration hangs; the controller is killed (kill -9) and the spec moves to v3. v3's hook
    waits (HookRunning) while v2's runs, never beside it; v2's is killed at its own timeout (10 s, its label),
    recorded so, and only then v3's runs and v3 takes traffic."""
    began = time.time()
    w = _world(docker_client, app_name, shipped, tmp_path, session_id)
    w.once()
    hung = {"beforeSwitch": {"command": ["sh", "-c", "echo migrating-v2; sleep 600"], "timeoutSeconds": 10}}
    w.set(image=test_images["v2"], activeColor="green", hooks=hung)
    _killed_mid_hook(w, tmp_path, signal.SIGKILL)
    [old] = [
        (c.attrs["Names"][0].lstrip("/"), c.attrs["Labels"]["bluegreen.revision"])
        for c in w.hook_containers()
    ]

    def running() -> list[tuple[str, str]]:
        return [(c.attrs["Names"][0].lstrip("/"), c.status) for c in w.hook_containers()]

    w.set(
        env={"RELEASE": "3"},
        hooks={"beforeSwitch": {"command": ["sh", "-c", "echo migrating-v3"], "timeoutSeconds": 30}},
    )
    r = w.run("--once")
    assert r.returncode == 1, r.explain()
    degraded = condition(w.status(), "Degraded")
    assert degraded["reason"] == "HookRunning" and old[0] in degraded["message"], degraded
    assert running() == [(old[0], "running")]
    assert (w.served(), w.routed()) == ("v1", "blue")
    # Until v2's own timeout passes, every plan waits for it; then it stops it first.
    for _ in range(100):
        _, planned = w.plan_json()
        assert running() == [(old[0], "running")]
        if planned["actions"] and planned["actions"][0]["action"] == "RemoveHook":
            break
        assert [b["reason"] for b in planned["blockers"]] == ["HookRunning"], planned
        time.sleep(0.2)
    else:
        raise AssertionError("the hung hook is never stopped")
    r = w.once()
    assert any(e.get("event") == "hook.timed_out" for e in r.logs()), r.explain()
    assert (w.served(), w.routed()) == ("v2", "green") and w.hook_containers() == []
    events = _hook_events(w, began)
    old_rev = old[1]
    assert [e for e, _ in events] == ["start", "die", "start", "die"] and events[0][1] == events[1][
        1
    ] == old_rev, events
    runs = {h["revision"]: h for h in w.status()["hooks"]}
    assert runs[old_rev]["state"] == "done" and runs[old_rev].get("exitCode") is None, runs
    assert (
        runs[old_rev]["output"][0] == "migrating-v2"
        and "past its timeout (10s" in runs[old_rev]["output"][-1]
    ), runs


def test_output_of_a_hook_collected_after_a_stop_and_a_revert_is_redacted(
    moto: MotoServer,
    docker_client: Any,
    test_images: dict[str, str],
    app_name: str,
    shipped: NginxInstance,
    tmp_path: Path,
    session_id: str,
) -> None:
    """Issue 19 #8: the controller is stopped (SIGTERM) while v2's hook prints its secret; the spec goes back to
    v1. The next pass only removes the finished hook container (RemoveHook), recording its output: its secrets
    are registered with the redactor first, so no 16-character fragment of the secret reaches the state or logs."""
    base = f"/{app_name}/prod/"
    secret = f"sk-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    moto.client("ssm").put_parameter(Name=base + "API_KEY", Value=secret, Type="SecureString", Overwrite=True)
    w = _world(
        docker_client,
        app_name,
        shipped,
        tmp_path,
        session_id,
        env_=moto.env(region=None),
        secrets={"ssm": {"path": base, "region": REGION}},
    )
    runs = [w.once()]
    v1 = dict(w.doc["spec"])
    hook = 'echo "key=$API_KEY"; echo "$API_KEY" >&2; sleep 2; echo migrated'
    w.set(
        image=test_images["v2"],
        activeColor="green",
        hooks={"beforeSwitch": {"command": ["sh", "-c", hook], "timeoutSeconds": 30}},
    )
    _killed_mid_hook(w, tmp_path, signal.SIGTERM)
    wait_until_exited = [c.status for c in w.hook_containers()]
    for _ in range(100):  # the hook ends on its own (2 s after it started)
        wait_until_exited = [c.status for c in w.hook_containers()]
        if wait_until_exited == ["exited"]:
            break
        time.sleep(0.1)
    assert wait_until_exited == ["exited"]
    w.set(**v1, hooks=None)
    runs.append(w.once())
    assert any(
        e.get("action") == "RemoveHook" and e.get("event") == "action.done" for e in runs[-1].logs()
    ), runs[-1].explain()
    assert (w.served(), w.routed()) == ("v1", "blue") and w.hook_containers() == []
    [run] = w.status()["hooks"]
    assert sorted(run["output"]) == sorted(["key=[REDACTED]", "[REDACTED]", "migrated"]), run

    channels = {f"run{i}.{k}": getattr(x, k) for i, x in enumerate(runs) for k in ("stdout", "stderr")}
    channels.update({str(p): p.read_text(errors="replace") for p in sorted(tmp_path.rglob("*.log"))})
    channels.update(
        {str(p): p.read_text(errors="replace") for p in sorted(w.state.rglob("*")) if p.is_file()}
    )
    pieces = _fragments(secret)
    for where, text in channels.items():
        leaked = sorted(f for f in pieces if f in text)
        assert not leaked, f"{len(leaked)} fragments of the secret leaked into {where}, e.g. {leaked[:3]}"
