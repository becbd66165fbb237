"""The git source (issue 15): the controller fetches the committed specs itself (controller/runtime/source.py).

Against a real git server on loopback (Debian's `git http-backend`, smart HTTP with a token:
tests/support/githttp.py), commits signed with an SSH key the test makes (ssh-keygen), and for the
end-to-end test a real dockerd and nginx: a signed commit that bumps the image and flips the color is
deployed by `--watch`; an unsigned one, a force-push and a deleted ref keep the last good commit in force.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from controller.cli.main import main
from controller.kernel.errors import InvalidInput
from controller.runtime import source as source_module
from controller.runtime.options import SourceOptions
from controller.runtime.source import (
    GitSource,
    check_ref,
    check_repo_path,
    check_url,
    config_from_options,
    shown_url,
)
from controller.store.metrics import SourceMetrics
from tests.factories import app_doc
from tests.support.controller_run import app_spec, history, read, served_version, status_file, subprocess_env
from tests.support.githttp import GitHttpServer, Upstream, ssh_key
from tests.support.net import free_port
from tests.support.nginx import NginxInstance
from tests.support.wait import wait_until

TOKEN = "tok-9f3c1e77d2a84b6f"  # distinctive: grepped for in every output and file
# ... and as it travels in the Authorization header, so that a leaked header is found too
TOKEN_FORMS = (TOKEN, __import__("base64").b64encode(f"x-access-token:{TOKEN}".encode()).decode())


@pytest.fixture(scope="module")
def gitserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHttpServer]:
    with GitHttpServer(tmp_path_factory.mktemp("gitroot"), TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(key, allowed-signers file) made by ssh-keygen for this module."""
    d = tmp_path_factory.mktemp("keys")
    key = d / "ci_ed25519"
    allowed = d / "allowed_signers"
    allowed.write_text("# CI's signing key\n" + ssh_key(key))
    allowed.chmod(0o644)
    return key, allowed


def token_file(d: Path, text: str = TOKEN) -> Path:
    p = d / "git-token"
    p.write_text(text + "\n")
    p.chmod(0o600)
    return p


def source_args(url: str, **kw: Any) -> SourceOptions:
    return SourceOptions(url=url, **{"path": "specs", **kw})


def spec_text(name: str, **spec: Any) -> str:
    doc = app_doc(name, nginx={"testCommand": ["/usr/sbin/nginx", "-t"], "reloadCommand": ["/usr/sbin/nginx", "-s", "reload"]}, **spec)
    return yaml.safe_dump(doc, sort_keys=False)


# ------------------------------------------------------------------------------------ bad input: exit 2, nothing changed


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--git-url", "not a url"], "--git-url"),
        (["--git-url", "ext::sh -c touch% /tmp/pwned"], "--git-url"),
        (["--git-url=-uhttps://example.test/r.git"], "--git-url"),
        (["--git-url", "ftp://example.test/r.git"], "--git-url"),
        (["--git-url", "https://ci:hunter2@example.test/r.git"], "--git-url"),
        (["--git-url", "https://example.test/r.git", "--git-ref", "main..evil"], "--git-ref"),
        (["--git-url", "https://example.test/r.git", "--git-ref=-upload-pack=x"], "--git-ref"),
        (["--git-url", "https://example.test/r.git", "--git-path", "../etc"], "--git-path"),
        (["--git-url", "https://example.test/r.git", "--git-path", "specs/../../etc"], "--git-path"),
        (["--git-url", "https://example.test/r.git", "--git-path", "/etc"], "--git-path"),
        (["--git-url", "https://example.test/r.git", "--git-verify", "@signers"], "--git-verify"),
        (["--git-url", "https://example.test/r.git", "--git-verify", "@missing"], "--git-verify"),
        (["--git-url", "https://example.test/r.git", "--git-token-file", "@loose-token"], "--git-token-file"),
        (["--git-url", "git://example.test/r.git", "--git-token-file", "@token"], "--git-token-file"),
        (["--git-url", "https://example.test/r.git", "-f", "/etc/bluegreen/specs"], "--git-url"),
    ],
)
def test_bad_source_input_exits_2_with_one_line_and_changes_nothing(
    args: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("controller.cli.main.configure", lambda *a, **k: None)  # in-process: leave structlog's set-up alone
    (tmp_path / "signers").write_text("ci@test ssh-ed25519 not-base64!!\n")
    loose = tmp_path / "loose-token"
    loose.write_text(TOKEN)
    loose.chmod(0o644)  # readable by everyone: refused
    token_file(tmp_path)
    files = {"@signers": tmp_path / "signers", "@missing": tmp_path / "nope", "@loose-token": loose, "@token": tmp_path / "git-token"}
    state = tmp_path / "state"
    argv = ["--once", *[str(files.get(a, a)) for a in args], "--state-dir", str(state)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines
    assert "hunter2" not in err and TOKEN not in err
    assert not state.exists(), "bad input must change nothing"


def test_once_before_any_commit_was_fetched_exits_1_naming_the_problem(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/deploy.git"  # nobody listens
    p = subprocess.run(
        [sys.executable, "-m", "controller", "--once", "--git-url", url, "--git-path", "specs", "--state-dir", str(tmp_path / "s"),
         "--log-format", "json"],
        capture_output=True, text=True, env=subprocess_env(None), timeout=60,
    )  # fmt: skip
    assert p.returncode == 1, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if not ln.startswith("{")]
    assert len(lines) == 1 and "no commit fetched yet" in lines[0] and url in lines[0], p.stderr
    events = [json.loads(ln) for ln in p.stderr.splitlines() if ln.startswith("{")]
    assert [e["reason"] for e in events if e["event"] == "source.unavailable"] == ["Unreachable"]
    saved = json.loads((tmp_path / "s" / "source" / "source.json").read_text())
    assert saved["applied"] is None and saved["problem"]["reason"] == "Unreachable"


def test_input_rules() -> None:
    assert check_ref("release/1.4") == "release/1.4"
    assert check_repo_path("specs/") == "specs" and check_repo_path("./") == "."
    assert check_url("git@github.com:org/specs.git") == "git@github.com:org/specs.git"
    assert shown_url("ssh://git@example.test:2222/org/specs.git") == "ssh://git@example.test:2222/org/specs.git"
    for bad in ("main.lock", "a@{1}", "a b", "x~1", "refs//heads"):
        with pytest.raises(InvalidInput):
            check_ref(bad)


# ------------------------------------------------------------------------------------ the source against a real server


def test_failures_keep_the_last_good_commit_and_back_off(
    gitserver: GitHttpServer, tmp_path: Path, captured_logs: list[MutableMapping[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    up = Upstream(gitserver.root, f"keep{os.getpid()}{time.monotonic_ns()}", None)
    good = up.commit({"specs/a.yaml": spec_text("a")}, "a v1")
    up.push()
    args = source_args(gitserver.url(up.bare.name), token_file=token_file(tmp_path))
    src = GitSource(config_from_options(args), tmp_path / "state")
    # Every git command's argv and environment: the token travels in the environment of the fetch only.
    calls: list[tuple[list[str], dict[str, str]]] = []
    real_run = subprocess.run

    def recording_run(argv: list[str], **kw: Any) -> Any:
        if f"--git-dir={src.repo}" in argv:  # the controller's git commands, not the test's own
            calls.append((list(argv), dict(kw.get("env") or {})))
        return real_run(argv, **kw)

    monkeypatch.setattr(subprocess, "run", recording_run)
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    src.bind_metrics(SourceMetrics(reg))
    assert src.sync() is True and src.problem is None
    in_force = src.checkout_path()
    assert in_force is not None and good in str(in_force)
    assert reg.get_sample_value("bluegreen_source_commit", {"url": gitserver.url(up.bare.name), "ref": "main", "commit": good}) == 1

    # A force-push: history that does not contain the commit in force is refused.
    up.amend("rewritten history")
    up.push(force=True)
    assert src.sync() is False
    assert src.problem is not None and src.problem[0] == "HistoryRewritten" and good[:12] in src.problem[1]
    assert src.checkout_path() == in_force
    assert reg.get_sample_value("bluegreen_source_commit_refused") == 1
    _, cond = src.status_for("a")
    assert cond.status and cond.reason == "HistoryRewritten" and f"commit {good[:12]} stays in force" in cond.message

    # The ref vanishes.
    up.delete_ref()
    assert src.sync() is False and src.problem is not None and src.problem[0] == "RefNotFound"
    assert src.checkout_path() == in_force
    assert src.next_delay(random.Random(1)) < 60 * 0.5  # failing: retried sooner than the interval, backing off from 5 s

    # A wrong token.
    bad = GitSource(config_from_options(source_args(gitserver.url(up.bare.name), token_file=token_file(Path(tempfile.mkdtemp(dir=tmp_path)), "wrong"))), tmp_path / "state")
    assert bad.sync() is False and bad.problem is not None and bad.problem[0] == "AuthFailed"
    assert bad.checkout_path() == in_force

    # Nobody listening.
    dead = GitSource(config_from_options(source_args(f"http://127.0.0.1:{free_port()}/x.git")), tmp_path / "state")
    assert dead.sync() is False and dead.problem is not None and dead.problem[0] == "Unreachable"
    assert dead.checkout_path() == in_force
    assert reg.get_sample_value("bluegreen_source_ok") == 0

    # A commit on top of the good one without the spec directory: refused, not an empty set of apps.
    up.reset(good)
    subprocess.run(["git", "-C", str(up.work), "mv", "specs", "moved"], check=True, capture_output=True)
    up.commit({}, "specs moved away")
    up.push(force=True)
    assert src.sync() is False and src.problem is not None and src.problem[0] == "PathNotFound"
    assert src.checkout_path() == in_force

    # Back to normal: a new commit on top of the good one is applied, the state says so.
    up.reset(good)
    new = up.commit({"specs/a.yaml": spec_text("a", image="dialogue:2")}, "a v2")
    up.push(force=True)
    assert src.sync() is True and src.problem is None
    assert new in str(src.checkout_path())
    assert calls and not [a for a, _ in calls for t in TOKEN_FORMS if t in " ".join(a)], "never in a process argument"
    with_header = [a for a, env in calls if any(t in env.get("GIT_CONFIG_VALUE_0", "") for t in TOKEN_FORMS)]
    assert with_header and all("fetch" in a for a in with_header), "only the fetch gets the header"
    assert all(env.get("GIT_TERMINAL_PROMPT") == "0" and env.get("GIT_CONFIG_NOSYSTEM") == "1" for _, env in calls)
    reasons = [e["reason"] for e in captured_logs if e["event"] == "source.unavailable"]
    assert reasons == ["HistoryRewritten", "RefNotFound", "AuthFailed", "Unreachable", "PathNotFound"], reasons  # once each, not per retry
    assert not [t for t in TOKEN_FORMS if t in repr(captured_logs)]
    saved = json.loads((tmp_path / "state" / "source" / "source.json").read_text())
    assert saved["applied"]["commit"] == new and saved["applied"]["subject"] == "a v2" and saved["problem"] is None


def test_token_from_an_ssm_securestring(
    gitserver: GitHttpServer, moto: Any, aws_env: dict[str, str], tmp_path: Path, captured_logs: list[MutableMapping[str, Any]]
) -> None:
    from controller.runtime.build import ssm_token
    from tests.support.moto import REGION

    moto.client("ssm").put_parameter(Name="/ops/deploy/git-token", Value=TOKEN, Type="SecureString", Overwrite=True)
    up = Upstream(gitserver.root, f"ssm{time.monotonic_ns()}", None)
    commit = up.commit({"specs/a.yaml": spec_text("a")}, "via ssm")
    up.push()
    args = source_args(gitserver.url(up.bare.name))
    src = GitSource(config_from_options(args, ssm_token("/ops/deploy/git-token", REGION)), tmp_path / "state")
    assert src.sync() is True and src.problem is None and commit in str(src.checkout_path())
    with pytest.raises(InvalidInput, match="give one"):
        config_from_options(source_args(gitserver.url(up.bare.name), token_file=token_file(tmp_path)), TOKEN)
    with pytest.raises(InvalidInput, match="--git-token-ssm"):
        ssm_token("not/a/parameter name", REGION)
    assert TOKEN not in repr(captured_logs)


def test_verification_applies_only_commits_signed_by_an_allowed_key(
    gitserver: GitHttpServer, signer: tuple[Path, Path], tmp_path: Path, captured_logs: list[MutableMapping[str, Any]]
) -> None:
    key, allowed = signer
    up = Upstream(gitserver.root, f"sig{time.monotonic_ns()}", key)
    unsigned = up.commit({"specs/a.yaml": spec_text("a")}, "unsigned", signed=False)
    up.push()
    args = source_args(gitserver.url(up.bare.name), token_file=token_file(tmp_path), verify=allowed)
    src = GitSource(config_from_options(args), tmp_path / "state")
    events: list[dict[str, Any]] = []
    src.notify = events.append
    assert src.sync() is False and src.checkout_path() is None
    assert src.problem == ("SignatureRefused", f"commit {unsigned[:12]} on main: not signed: refused")
    # One release event for the refused commit (issue 21), not one per sync that finds it again.
    assert src.sync() is False
    assert [(e["event"], e["app"]) for e in events] == [("source-refused", None)]
    assert events[0]["text"].startswith("source commit refused: ") and f"commit {unsigned[:12]} on main: not signed" in events[0]["text"]

    signed = up.commit({"specs/a.yaml": spec_text("a", image="dialogue:2")}, "signed")
    up.push()
    assert src.sync() is True and signed in str(src.checkout_path())
    st, cond = src.status_for("a")
    assert st.commit == signed and st.signer is not None and st.signer.startswith("ci@test.invalid (ED25519") and not cond.status
    # A release records where its spec came from: the commit, its author and signer.
    origin = src.origin("a")
    assert (origin.commit, origin.author, origin.signer, origin.subject) == (signed, "ci <ci@test.invalid>", st.signer, "signed")

    # Signed, but by a key nobody allowed.
    other = tmp_path / "other_key"
    ssh_key(other)
    up.key = other
    stranger = up.commit({"specs/a.yaml": spec_text("a", image="dialogue:3")}, "stranger")
    up.push()
    assert src.sync() is False and signed in str(src.checkout_path())
    assert src.problem is not None and src.problem[0] == "SignatureRefused"
    assert f"commit {stranger[:12]}" in src.problem[1] and "not in" in src.problem[1]


def test_an_invalid_spec_at_a_commit_keeps_that_apps_last_valid_spec(
    gitserver: GitHttpServer, tmp_path: Path, captured_logs: list[MutableMapping[str, Any]]
) -> None:
    up = Upstream(gitserver.root, f"inv{time.monotonic_ns()}", None)
    first = up.commit({"specs/a.yaml": spec_text("a"), "specs/b.yaml": spec_text("b", ports={"blue": 18091, "green": 18092})}, "two apps")
    up.push()
    src = GitSource(config_from_options(source_args(gitserver.url(up.bare.name), token_file=token_file(tmp_path))), tmp_path / "state")
    src.sync()
    sel = src.select(src.stable_path, state_dir=tmp_path / "state")
    assert sorted(a.name for a in sel.apps) == ["a", "b"] and not sel.problems

    # A link in the repository must not point the controller at a host file: it is checked out as a plain file.
    os.symlink("/etc/shadow", up.work / "specs" / "c.yaml")
    second = up.commit(
        {"specs/a.yaml": "apiVersion: bluegreen/v1\nkind: BlueGreenApp\nmetadata: {name: a}\nspec: {image: [}\n",
         "specs/b.yaml": spec_text("b", image="dialogue:2", ports={"blue": 18091, "green": 18092})},
        "break a, bump b",
    )
    up.push()
    assert src.sync() is True
    after = src.select(src.stable_path, sel.apps_by_file, state_dir=tmp_path / "state")
    by_name = {a.name: a for a in after.apps}
    assert by_name["a"] == next(a for a in sel.apps if a.name == "a"), "a keeps its last valid spec"
    assert by_name["b"].spec.image == "dialogue:2", "b moves on"
    checkout = src.checkout_path()
    assert checkout is not None and not (checkout / "c.yaml").is_symlink() and (checkout / "c.yaml").read_text() == "/etc/shadow"
    problems = {str(p.app): p for p in after.problems}
    assert sorted(problems) == ["a", "c"] and second in problems["a"].message  # the message names the commit
    assert src.history_fields("a") == {"commit": first} and src.history_fields("b") == {"commit": second}
    st, _ = src.status_for("a")
    assert st.commit == first and st.invalid is not None and st.invalid.commit == second


def test_accessories_at_the_commit_are_read_with_the_apps(gitserver: GitHttpServer, tmp_path: Path) -> None:
    """An Accessory committed beside the apps is in force like them (--once and --watch reconcile it; the apps'
    dependsOn is checked against it): the git source used to hand on the apps only."""
    up = Upstream(gitserver.root, f"acc{time.monotonic_ns()}", None)
    accessory = "apiVersion: bluegreen/v1\nkind: Accessory\nmetadata: {name: redis}\nspec: {image: 'redis:7.2'}\n"
    up.commit({"specs/a.yaml": spec_text("a", dependsOn=["redis"]), "specs/redis.yaml": accessory}, "an app and its redis")
    up.push()
    src = GitSource(config_from_options(source_args(gitserver.url(up.bare.name), token_file=token_file(tmp_path))), tmp_path / "state")
    src.sync()
    sel = src.select(src.stable_path, state_dir=tmp_path / "state")
    assert not sel.problems, sel.problems
    assert [a.name for a in sel.apps] == ["a"] and [a.name for a in sel.accessories] == ["redis"]
    assert list(sel.accessories_by_file) == [src.stable_path / "redis.yaml"]  # keyed by the stable path, like the apps


# ------------------------------------------------------------------------------------ end to end: --watch on real Docker and nginx


def test_watch_deploys_a_signed_commit_and_keeps_it_against_unsigned_force_push_and_deleted_ref(
    docker_client: Any,
    test_images: dict[str, str],
    app_name: str,
    nginx: NginxInstance,
    tmp_path: Path,
    session_id: str,
    gitserver: GitHttpServer,
    signer: tuple[Path, Path],
) -> None:
    key, allowed = signer
    up = Upstream(gitserver.root, f"e2e-{app_name}", key)
    doc = app_spec(app_name, nginx, tmp_path, "bgtest:v1", "blue", session_id=session_id)

    def spec(image: str, color: str) -> dict[str, str]:
        d = {**doc, "spec": {**doc["spec"], "image": image, "activeColor": color}}
        return {f"deploy/specs/{app_name}.yaml": yaml.safe_dump(d, sort_keys=False)}

    c1 = up.commit(spec("bgtest:v1", "blue"), "deploy v1")
    up.push()
    state = tmp_path / "state-dir"
    log = tmp_path / "watch.log"
    port = free_port()
    git_args = [
        "--git-url", gitserver.url(up.bare.name), "--git-path", "deploy/specs", "--git-verify", str(allowed),
        "--git-token-file", str(token_file(tmp_path)), "--state-dir", str(state),
    ]  # fmt: skip
    watch_argv = [sys.executable, "-m", "controller", "--watch", *git_args, "--git-interval", "1", "--resync", "3600",
                  "--log-format", "json", "--metrics-port", str(port)]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(watch_argv, stdout=out, stderr=subprocess.STDOUT, env=subprocess_env(None))
    try:

        def events(name: str) -> list[dict[str, Any]]:
            found = []
            for line in (read(log) or "").splitlines():
                if line.startswith("{"):
                    try:
                        e = json.loads(line)
                    except ValueError:
                        continue
                    if e.get("event") == name:
                        found.append(e)
            return found

        wait_until(lambda: served_version(nginx, app_name) == "v1", timeout=30, interval=0.1, message="v1 served")

        # CI pushed v2; a signed commit bumps the image and flips the color: deployed within the interval + deploy time.
        c2 = up.commit(spec("bgtest:v2", "green"), "deploy v2")
        pushed = time.monotonic()
        up.push()
        wait_until(lambda: served_version(nginx, app_name) == "v2", timeout=25, interval=0.05, message="v2 served")
        took = time.monotonic() - pushed
        assert took < 1.1 + 15, took
        wait_until(lambda: status_file(state, app_name).get("source", {}).get("commit") == c2 and
                   next(c for c in status_file(state, app_name)["conditions"] if c["type"] == "Ready")["status"] == "True",
                   timeout=15, message="status names c2")  # fmt: skip
        assert any(h.get("commit") == c2 for h in history(state, app_name)), "history lines carry the commit"
        assert not any(h.get("commit") == c1 and h.get("image") == "bgtest:v2" for h in history(state, app_name))
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert f'commit="{c2}"' in metrics and "bluegreen_source_last_fetch_success_timestamp_seconds" in metrics

        sj = status_file(state, app_name)["source"]
        assert sj["commit"] == c2 and sj["subject"] == "deploy v2" and sj["authorDate"] and sj["url"] == gitserver.url(up.bare.name)

        def stays_v2(reason: str, commit: str | None) -> None:
            ev = wait_until(lambda: [e for e in events("source.unavailable") if e.get("reason") == reason], timeout=15, message=reason)
            if commit is not None:
                assert commit[:12] in ev[-1]["error"]
            # status.json says so (the source's change asks every app for a pass) and still names c2.
            wait_until(lambda: source_condition(status_file(state, app_name))["reason"] == reason, timeout=10, message=f"status {reason}")
            assert source_condition(status_file(state, app_name))["status"] == "True"
            assert status_file(state, app_name)["source"]["commit"] == c2
            for _ in range(5):  # traffic stays where the last good commit put it
                assert served_version(nginx, app_name) == "v2"
                time.sleep(0.1)

        # An unsigned commit (it flips back to blue) is refused; the signed c2 stays in force.
        c3 = up.commit(spec("bgtest:v1", "blue"), "unsigned flip", signed=False)
        up.push()
        proc.send_signal(signal.SIGHUP)  # SIGHUP fetches now (the poll backs off while the source fails)
        stays_v2("SignatureRefused", c3)
        cond = source_condition(status_file(state, app_name))
        assert cond["reason"] == "SignatureRefused" and c3[:12] in cond["message"] and f"commit {c2[:12]} stays in force" in cond["message"]

        # A force-push of a signed commit that drops c2 from the history.
        up.reset(c1)
        c4 = up.commit(spec("bgtest:v1", "blue"), "force-pushed")
        up.push(force=True)
        proc.send_signal(signal.SIGHUP)
        stays_v2("HistoryRewritten", c4)

        # The branch is deleted.
        up.delete_ref()
        proc.send_signal(signal.SIGHUP)
        stays_v2("RefNotFound", None)
        assert proc.poll() is None

        # --status (another process; reads the commit in force, fetches nothing) shows that commit and the condition.
        st = subprocess.run([sys.executable, "-m", "controller", "--status", *git_args], capture_output=True, text=True,
                            env=subprocess_env(None), timeout=60)  # fmt: skip
        assert f"commit {c2} (" in st.stdout and "deploy v2" in st.stdout, st.stdout + st.stderr
        assert "SourceUnavailable True  RefNotFound" in st.stdout, st.stdout
        # --once (cron) fetches once: the branch is still gone, so it reconciles c2 (nothing to do) and exits 1 saying why.
        once = subprocess.run([sys.executable, "-m", "controller", "--once", *git_args, "--log-format", "json"], capture_output=True,
                              text=True, env=subprocess_env(None), timeout=60)  # fmt: skip
        assert once.returncode == 1 and f"{app_name}: converged" in once.stdout, once.stdout + once.stderr
        assert [ln for ln in once.stderr.splitlines() if not ln.startswith("{") and "RefNotFound" in ln], once.stderr
        assert served_version(nginx, app_name) == "v2"

        # The token never appears: not in any output, log, status, history, or any file of the state dir (the clone's
        # config included), nor in the controller's arguments. The server saw it: it was used.
        assert any(a and a.startswith("Basic ") for a in gitserver.seen_auth)
        outputs = [read(log) or "", st.stdout, st.stderr, once.stdout, once.stderr, " ".join(watch_argv)]
        assert not [o for o in outputs for t in TOKEN_FORMS if t in o]
        leaked = []
        for dirpath, _dirs, names in os.walk(state):
            for n in names:
                p = Path(dirpath) / n
                if p.is_file() and not p.is_symlink() and any(t.encode() in p.read_bytes() for t in TOKEN_FORMS):
                    leaked.append(p)
        assert not leaked
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def source_condition(status: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status["conditions"] if c["type"] == "SourceUnavailable")
    return found


def test_every_commit_since_the_one_in_force_must_be_signed(
    gitserver: GitHttpServer, signer: tuple[Path, Path], tmp_path: Path, captured_logs: list[MutableMapping[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed commit on top of an unsigned one does not carry it in: the whole range is verified (issue 19 #9)."""
    key, allowed = signer
    up = Upstream(gitserver.root, f"range{time.monotonic_ns()}", key)
    c1 = up.commit({"specs/a.yaml": spec_text("a")}, "c1")
    up.push()
    args = source_args(gitserver.url(up.bare.name), token_file=token_file(tmp_path), verify=allowed)
    src = GitSource(config_from_options(args), tmp_path / "state")
    assert src.sync() is True and c1 in str(src.checkout_path())

    # An unsigned change, then a signed commit on top of it: both refused, status naming the unsigned one.
    unsigned = up.commit({"specs/a.yaml": spec_text("a", image="evil:1")}, "unsigned", signed=False)
    on_top = up.commit({"specs/b.yaml": spec_text("b")}, "signed on top")
    up.push()
    assert src.sync() is False and c1 in str(src.checkout_path())
    assert src.problem is not None and src.problem[0] == "SignatureRefused", src.problem
    assert src.problem[1].startswith(f"commit {unsigned[:12]} on main: not signed: refused"), src.problem
    assert f"from the commit in force {c1[:12]} to {on_top[:12]}" in src.problem[1]
    st, cond = src.status_for("a")
    assert (st.commit, st.head, cond.status, cond.reason) == (c1, on_top, True, "SignatureRefused")
    assert unsigned[:12] in cond.message and f"commit {c1[:12]} stays in force" in cond.message
    assert "evil:1" not in (src.stable_path / "a.yaml").read_text()

    # The branch rewritten without it (still on top of the commit in force): two signed commits, applied at once.
    up.reset(c1)
    up.commit({"specs/a.yaml": spec_text("a", image="dialogue:2")}, "c2")
    c3 = up.commit({"specs/b.yaml": spec_text("b")}, "c3")
    up.push(force=True)
    assert src.sync() is True and c3 in str(src.checkout_path()) and src.problem is None
    assert "dialogue:2" in (src.stable_path / "a.yaml").read_text()
    st, _ = src.status_for("a")
    assert st.commit == c3 and st.signer is not None and st.signer.startswith("ci@test.invalid")

    # A range longer than one sync verifies is refused, with the limit named.
    monkeypatch.setattr(source_module, "MAX_VERIFIED_COMMITS", 2)
    for i in range(3):
        last = up.commit({"specs/a.yaml": spec_text("a", image=f"dialogue:{4 + i}")}, f"c{4 + i}")
    up.push()
    assert src.sync() is False and c3 in str(src.checkout_path())
    assert src.problem is not None and src.problem[0] == "SignatureRefused"
    assert f"main at {last[:12]} is more than 2 commits ahead of the commit in force {c3[:12]}" in src.problem[1]
