"""Secrets from SSM: a real moto server (`moto_server`) on loopback, real Docker and a real nginx.

- SsmSource against moto: versions without decryption, pinned decrypted values, fingerprints, errors.
- A real deploy with SecureStrings: the container's environment has them (bgtest `/env?NAME`), and no
  value appears on any output channel (stdout, stderr JSON logs, --plan/--status text and JSON, every
  file of the state dir, the metrics textfile, docker inspect except Config.Env).
- Rotation: SecretsStale (status, --plan, metric), the live container untouched, the next flip deploys it.
- Failures (missing parameter, unreachable endpoint, no region, no credentials, access denied): exit 1,
  one line naming the path, nothing changed.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.drivers.aws import aws_config, aws_errors
from controller.drivers.ssm import SsmSource
from controller.kernel.errors import ControllerError, SecretsError, ServiceUnavailable, TemporaryError
from controller.kernel.logs import MASK, redact_text
from controller.spec.app import SsmSecrets, parse_app
from controller.store.documents import STATUS
from controller.world.secrets import (
    FINGERPRINT_KEY,
    LABEL_FINGERPRINT,
    SecretRef,
    fingerprint,
    render_env_file,
)
from tests.conftest import _unavailable
from tests.support.controller_run import ROOT, Run, World, condition, get, run_reconcile
from tests.support.moto import AWS_ENV_KEYS, REGION, MotoServer, MotoUnavailable
from tests.support.net import free_port
from tests.support.nginx import NginxInstance


def _put(moto: MotoServer, name: str, value: str, kind: str = "SecureString") -> int:
    out = moto.client("ssm").put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)
    return int(out["Version"])


def _secret() -> str:
    return f"sk-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- spec


def _doc(secrets: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "bluegreen/v1",
            "kind": "BlueGreenApp",
            "metadata": {"name": "dialogue"},
            "spec": {"image": "dialogue:1", "activeColor": "blue", "secrets": secrets},
        }
    )


def test_spec_accepts_the_documented_shape() -> None:
    app = parse_app(
        _doc(
            {
                "ssm": {"path": "/dialogue/prod", "region": "ap-northeast-2", "names": ["OPENAI_API_KEY", "mongo-uri"], "rename": {"mongo-uri": "MONGO_URI"}},
                "envFile": "/srv/dialogue/.env",
            }
        ),
        "t.yaml",
    )
    s = app.spec.secrets
    assert s is not None and s.ssm.path == "/dialogue/prod/" and s.envFile == Path("/srv/dialogue/.env")


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ({"ssm": {"path": "dialogue/prod"}}, "secrets.ssm.path"),
        ({"ssm": {"path": "/a/", "region": "Seoul"}}, "secrets.ssm.region"),
        ({"ssm": {"path": "/a/", "rename": {"x": "BAD-NAME"}}}, "not a usable environment variable name"),
        ({"ssm": {"path": "/a/", "rename": {"x": "BLUEGREEN_X"}}}, "not a usable environment variable name"),
        ({"ssm": {"path": "/a/", "names": []}}, "secrets.ssm.names"),
        ({"ssm": {"path": "/a/", "names": ["a/b"]}}, "not a parameter name"),
        ({"ssm": {"path": "/a/"}, "envFile": ".env"}, "must be an absolute path"),
        ({"ssm": {"path": "/a/", "kms": "x"}}, "unknown field"),
        ({"vault": {}}, "unknown field"),
    ],
)
def test_spec_rejects_bad_secrets(secrets: Any, message: str) -> None:
    from controller.kernel.errors import SpecError

    with pytest.raises(SpecError) as e:
        parse_app(_doc(secrets), "t.yaml")
    assert message in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- SSM source against moto


def test_versions_without_values_then_pinned_values(moto: MotoServer, aws_env: dict[str, str]) -> None:
    base = f"/{uuid.uuid4().hex[:8]}/prod/"
    key, uri = _secret(), _secret()
    _put(moto, base + "OPENAI_API_KEY", key)
    _put(moto, base + "mongo-uri", uri)
    _put(moto, base + "PLAIN", "not-secret-at-all", "String")
    _put(moto, base + "deeper/IGNORED", "x")  # not a direct child: not taken
    cfg = SsmSecrets(path=base, region=REGION, rename={"mongo-uri": "MONGO_URI"})
    src = SsmSource()
    refs = src.versions(cfg)
    assert [(r.env, r.parameter, r.version) for r in refs] == [
        ("MONGO_URI", base + "mongo-uri", 1),
        ("OPENAI_API_KEY", base + "OPENAI_API_KEY", 1),
        ("PLAIN", base + "PLAIN", 1),
    ]
    assert {r.type for r in refs} == {"SecureString", "String"}
    assert key not in repr(refs) and uri not in repr(refs)
    fp = fingerprint(refs)

    # Rotation after the versions were read: the values are still those of the versions planned.
    _put(moto, base + "OPENAI_API_KEY", "rotated-" + key)
    values = src.values(cfg, refs)
    assert values == {"OPENAI_API_KEY": key, "MONGO_URI": uri, "PLAIN": "not-secret-at-all"}
    assert redact_text(f"x {key} y") == f"x {MASK} y"  # every value is registered with the redactor

    rotated = src.versions(cfg)
    assert fingerprint(rotated) != fp
    assert next(r for r in rotated if r.env == "OPENAI_API_KEY").version == 2


def test_names_select_and_a_missing_one_names_its_path(moto: MotoServer, aws_env: dict[str, str]) -> None:
    base = f"/{uuid.uuid4().hex[:8]}/prod/"
    _put(moto, base + "A", _secret())
    _put(moto, base + "B", _secret())
    assert [r.env for r in SsmSource().versions(SsmSecrets(path=base, region=REGION, names=["A"]))] == ["A"]
    with pytest.raises(SecretsError) as e:
        SsmSource().versions(SsmSecrets(path=base, region=REGION, names=["A", "NOPE"]))
    assert str(e.value) == f"SSM parameter {base}NOPE: ParameterNotFound"
    with pytest.raises(SecretsError) as e:
        SsmSource().versions(SsmSecrets(path=f"/{uuid.uuid4().hex[:8]}/", region=REGION))
    assert "none found" in str(e.value)


def test_a_parameter_name_that_is_no_env_name_needs_rename(moto: MotoServer, aws_env: dict[str, str]) -> None:
    base = f"/{uuid.uuid4().hex[:8]}/prod/"
    _put(moto, base + "api.key", _secret())
    with pytest.raises(SecretsError) as e:
        SsmSource().versions(SsmSecrets(path=base, region=REGION))
    assert f"SSM parameter {base}api.key" in str(e.value) and "rename" in str(e.value)


@pytest.mark.parametrize("case", ["unreachable", "no-region", "no-credentials"])
def test_aws_failures_are_one_line_naming_the_path(
    case: str, moto: MotoServer, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    base = f"/{uuid.uuid4().hex[:8]}/prod/"
    region: str | None = REGION
    # A port bound but never listening, held for the whole test: connections to it are refused, and no other process
    # (another xdist worker's server) can take it between choosing it and using it, as a merely free port could be.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    request.addfinalizer(closed.close)
    if case == "unreachable":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed.getsockname()[1]}")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        expect = "AWS endpoint unreachable"
    elif case == "no-region":
        monkeypatch.delenv("AWS_REGION")
        region = None
        expect = "no AWS region"
    else:
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        expect = "no AWS credentials"
    # An endpoint that does not answer is temporary (retried with backoff); no region or credentials is ours to fix.
    expected: type[ControllerError] = ServiceUnavailable if case == "unreachable" else SecretsError
    with pytest.raises(expected) as e:
        SsmSource().versions(SsmSecrets(path=base, region=region))
    msg = str(e.value)
    assert msg.startswith(f"SSM parameters under {base}: {expect}"), msg
    assert "\n" not in msg and e.value.__cause__ is None and e.value.__suppress_context__


@pytest.mark.parametrize(
    ("code", "expected"),
    [("InternalServerError", ServiceUnavailable), ("RequestLimitExceeded", ServiceUnavailable), ("AccessDeniedException", SecretsError)],
)
def test_an_unavailable_service_is_temporary_and_access_denied_is_not(code: str, expected: type[ControllerError]) -> None:
    import botocore.exceptions as bx

    with pytest.raises(expected) as e, aws_errors("SSM parameters under /d/prod/", SecretsError):
        raise bx.ClientError({"Error": {"Code": code, "Message": "no"}, "ResponseMetadata": {"RetryAttempts": 4}}, "GetParameters")
    assert str(e.value) == f"SSM parameters under /d/prod/: {code} (after 4 retries): no"
    assert isinstance(e.value, TemporaryError) is (expected is ServiceUnavailable)
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_throttling_is_retried_by_botocore_then_one_line() -> None:
    from botocore.exceptions import ClientError

    cfg = aws_config("ssm")
    assert cfg.retries["mode"] == "standard" and cfg.retries["max_attempts"] >= 3
    err = ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}, "ResponseMetadata": {"RetryAttempts": 4}},
        "GetParametersByPath",
    )
    # Still throttled after botocore's own retries: temporary, so the controller backs off in turn.
    with pytest.raises(ServiceUnavailable) as e, aws_errors("SSM parameters under /a/", SecretsError):
        raise err
    assert str(e.value) == "SSM parameters under /a/: ThrottlingException (after 4 retries): Rate exceeded"


def test_access_denied_against_moto_with_iam_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto enforces IAM after INITIAL_NO_AUTH_ACTION_COUNT requests: a user without policy is denied."""
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "3")
    try:
        server = MotoServer.start(tmp_path / "moto-iam")
    except MotoUnavailable as exc:
        _unavailable(str(exc))
        raise
    with server:
        iam = server.client("iam")
        iam.create_user(UserName="noperm")  # 1
        key = iam.create_access_key(UserName="noperm")["AccessKey"]  # 2
        server.client("ssm").put_parameter(Name="/denied/prod/A", Value=_secret(), Type="SecureString")  # 3
        env = server.env(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
        for k in AWS_ENV_KEYS:
            monkeypatch.delenv(k, raising=False)
            if k in env:
                monkeypatch.setenv(k, env[k])
        with pytest.raises(SecretsError) as e:
            SsmSource().versions(SsmSecrets(path="/denied/prod/", region=REGION))
    assert str(e.value) == (
        "SSM parameters under /denied/prod/: AccessDenied: "
        "User: arn:aws:iam::123456789012:user/noperm is not authorized to perform: ssm:GetParametersByPath"
    )


def test_env_file_format() -> None:
    text = render_env_file({"B": "2", "A": "x=y z"}, "abc")
    assert text.splitlines()[1] == f"# {LABEL_FINGERPRINT}=abc" and text.endswith("A=x=y z\nB=2\n")
    with pytest.raises(SecretsError) as e:
        render_env_file({"K": "line1\nline2"}, "abc")
    assert "line1" not in str(e.value) and "K" in str(e.value)


def test_fingerprint_is_of_versions_not_values() -> None:
    a = [SecretRef("A", "/p/A", 1, "SecureString")]
    assert fingerprint(a) == fingerprint(list(a)) != fingerprint([SecretRef("A", "/p/A", 2, "SecureString")])
    assert len(fingerprint(a)) == 16 and FINGERPRINT_KEY == "secrets-fingerprint"


def test_plain_once_does_not_import_boto3() -> None:
    """boto3/botocore are imported only when an app uses SSM or ECR."""
    code = (
        "import sys\n"
        "import controller.cli.main, controller.app.reconcile, controller.world.secrets, controller.drivers.registry, controller.drivers.aws\n"
        "from controller.drivers.ssm import SsmSource\n"
        "from controller.world.secrets import SecretsResolver\n"
        "from tests.factories import make_app\n"
        "r = SecretsResolver(None, SsmSource())(make_app('plain'))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_secrets_and_planner_import_no_third_party_client() -> None:
    """The secrets data and the planner's rule sit in the core: no AWS, Docker or HTTP client comes with them."""
    code = (
        "import sys\n"
        "import controller.world.secrets, controller.app.plan\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 'botocore', 'docker', 'httpx', 'requests'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# --------------------------------------------------------------------------- real deploys


class SecretWorld(World):
    """World whose controller runs talk to moto."""

    def __init__(self, *args: Any, env: dict[str, str], **spec: Any) -> None:
        super().__init__(*args, **{("env" if k == "spec_env" else k): v for k, v in spec.items()})
        self.env = env

    def run(self, *args: str, timeout: float = 60.0) -> Run:
        return run_reconcile(self.spec_path, self.state, "--log-format", "json", "--log-level", "debug", *args, timeout=timeout, env=self.env)


@pytest.fixture
def sworld(
    moto: MotoServer, docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str
) -> Iterator[tuple[SecretWorld, str, dict[str, str]]]:
    """An app whose spec reads /<app>/prod/ from moto, with an envFile; returns (world, path, values)."""
    base = f"/{app_name}/prod/"
    values = {"OPENAI_API_KEY": _secret(), "MONGO_URI": f"mongodb://app:{_secret()}@mongo:27017/db", "SUPERTONE_API_KEY": _secret()}
    _put(moto, base + "OPENAI_API_KEY", values["OPENAI_API_KEY"])
    _put(moto, base + "mongo-uri", values["MONGO_URI"])
    _put(moto, base + "SUPERTONE_API_KEY", values["SUPERTONE_API_KEY"])
    w = SecretWorld(
        docker_client,
        app_name,
        nginx,
        tmp_path,
        session_id,
        env=moto.env(region=None),
        spec_env={"SPRING_PROFILES_ACTIVE": "prod"},
        secrets={"ssm": {"path": base, "region": REGION, "rename": {"mongo-uri": "MONGO_URI"}}, "envFile": str(tmp_path / "env" / "app.env")},
    )
    yield w, base, values


def _container_env(w: World, color: str, name: str) -> str | None:
    c = w.container(color)
    port = c.attrs["HostConfig"]["PortBindings"]["8081/tcp"][0]["HostPort"]
    r = get(f"http://127.0.0.1:{port}/env?{name}")
    return r.text if r.status_code == 200 else None


def _assert_nowhere(values: list[str], w: SecretWorld, runs: list[Run], textfile: Path | None = None) -> None:
    """No secret value on any output channel the controller has."""
    channels: dict[str, str] = {}
    for i, r in enumerate(runs):
        channels[f"run{i}.stdout"] = r.stdout
        channels[f"run{i}.stderr"] = r.stderr
    for p in sorted(w.state.rglob("*")):
        if p.is_file():
            channels[str(p)] = p.read_text(errors="replace")
    if textfile is not None:
        channels[str(textfile)] = textfile.read_text()
    for color in ("blue", "green"):
        c = w.container(color)
        if c is not None:
            attrs = json.loads(json.dumps(c.attrs))
            attrs["Config"].pop("Env")  # the one place the values must be
            channels[f"inspect {color}"] = json.dumps(attrs)
    assert channels
    for v in values:
        for where, text in channels.items():
            assert v not in text, f"a secret value leaked into {where}"


def test_deploy_injects_secrets_and_never_leaks_them(sworld: tuple[SecretWorld, str, dict[str, str]], tmp_path: Path) -> None:
    w, base, values = sworld
    textfile = tmp_path / "metrics" / "bluegreen.prom"
    plan = w.run("--plan")
    assert plan.returncode == 1, plan.explain()
    first = w.once("--metrics-textfile", str(textfile))
    w.assert_serving("blue", "v1")

    # In the container's environment, as the app sees it.
    for name, value in values.items():
        assert _container_env(w, "blue", name) == value
    assert _container_env(w, "blue", "SPRING_PROFILES_ACTIVE") == "prod"
    blue = w.container("blue")
    assert len(blue.labels[LABEL_FINGERPRINT]) == 16

    # envFile: mode 0600, docker --env-file format, spec env + secrets.
    env_file = tmp_path / "env" / "app.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    lines = env_file.read_text().splitlines()
    assert f"# {LABEL_FINGERPRINT}={blue.labels[LABEL_FINGERPRINT]}" in lines
    assert {f"{k}={v}" for k, v in {**values, "SPRING_PROFILES_ACTIVE": "prod"}.items()} <= set(lines)

    # Status and plan show names and versions, never values.
    status = w.status()
    assert status["desired"]["secrets"] == [
        f"MONGO_URI={base}mongo-uri:1",
        f"OPENAI_API_KEY={base}OPENAI_API_KEY:1",
        f"SUPERTONE_API_KEY={base}SUPERTONE_API_KEY:1",
    ]
    assert condition(status, "SecretsStale")["status"] == "False"
    runs = [plan, first, w.run("--plan"), w.run("--plan", "--json"), w.run("--status"), w.run("--status", "--json"), w.once()]
    assert runs[2].returncode == 0 and "in sync" in runs[2].stdout
    assert "secrets   MONGO_URI=" in runs[4].stdout
    # Debug logs of a run that creates a container carry the most: a flip, with its health waits.
    w.set(activeColor="green")
    runs.append(w.once("--metrics-textfile", str(textfile)))
    w.assert_serving("green", "v1")
    assert _container_env(w, "green", "OPENAI_API_KEY") == values["OPENAI_API_KEY"]
    _assert_nowhere(list(values.values()), w, runs, textfile)


def test_rotation_marks_live_color_stale_and_the_next_flip_deploys_it(
    sworld: tuple[SecretWorld, str, dict[str, str]], moto: MotoServer, tmp_path: Path
) -> None:
    w, base, values = sworld
    w.once()
    w.assert_serving("blue", "v1")
    old_key = values["OPENAI_API_KEY"]
    new_key = _secret()
    assert _put(moto, base + "OPENAI_API_KEY", new_key) == 2

    before = w.snapshot()
    textfile = tmp_path / "m.prom"
    plan = w.run("--plan")
    assert plan.returncode == 1, plan.explain()
    assert "secrets stale:" in plan.stdout and f"{w.app}-blue serves with secrets fingerprint" in plan.stdout
    code, pj = w.plan_json()
    assert code == 1 and pj["actions"] == [] and pj["blockers"] == [] and "activeColor: green" in pj["secretsStale"]
    once = w.once("--metrics-textfile", str(textfile))  # exit 0: serving as desired, the live color is not restarted
    assert f"{w.app}: SecretsStale:" in once.stderr
    after = w.snapshot()
    assert after.containers == before.containers and after.include == before.include and after.workers == before.workers
    assert _container_env(w, "blue", "OPENAI_API_KEY") == old_key
    status = w.status()
    stale = condition(status, "SecretsStale")
    assert stale["status"] == "True" and stale["reason"] == "SecretsRotated"
    assert condition(status, "Ready")["status"] == "True"
    assert f"OPENAI_API_KEY={base}OPENAI_API_KEY:2" in status["desired"]["secrets"]
    assert f'bluegreen_app_condition{{app="{w.app}",condition="SecretsStale"}} 1.0' in textfile.read_text()
    code, st = w.status_json()
    assert condition(st, "SecretsStale")["status"] == "True"

    # The next flip deploys the rotated value; the old color keeps what it had (rollback stays possible).
    w.set(activeColor="green")
    w.once("--metrics-textfile", str(textfile))
    w.assert_converged_on("green", "v1")
    assert _container_env(w, "green", "OPENAI_API_KEY") == new_key
    assert _container_env(w, "blue", "OPENAI_API_KEY") == old_key
    assert condition(w.status(), "SecretsStale")["status"] == "False"
    assert f'bluegreen_app_condition{{app="{w.app}",condition="SecretsStale"}} 0.0' in textfile.read_text()
    assert w.container("green").labels[LABEL_FINGERPRINT] != w.container("blue").labels[LABEL_FINGERPRINT]
    _assert_nowhere([old_key, new_key, values["MONGO_URI"]], w, [plan, once])


def test_secret_failures_exit_1_name_the_path_and_change_nothing(sworld: tuple[SecretWorld, str, dict[str, str]]) -> None:
    """Missing parameter, unreachable endpoint, no region, no credentials: each during a deploy that needs them."""
    w, base, values = sworld
    w.once()
    w.assert_serving("blue", "v1")
    good_env = dict(w.env)
    good_secrets = w.doc["spec"]["secrets"]
    env_file = Path(good_secrets["envFile"])
    env_before = env_file.read_text()
    for case in ("missing-parameter", "unreachable", "no-region", "no-credentials"):
        ssm: dict[str, Any] = dict(good_secrets["ssm"])
        w.env = dict(good_env)
        if case == "missing-parameter":
            ssm["names"] = ["OPENAI_API_KEY", "NOT_THERE"]
            expect = f"SSM parameter {base}NOT_THERE: ParameterNotFound"
        elif case == "unreachable":
            w.env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", AWS_MAX_ATTEMPTS="2")
            expect = f"SSM parameters under {base}: AWS endpoint unreachable"
        elif case == "no-region":
            del ssm["region"]
            expect = f"SSM parameters under {base}: no AWS region"
        else:
            del w.env["AWS_ACCESS_KEY_ID"], w.env["AWS_SECRET_ACCESS_KEY"]
            expect = f"SSM parameters under {base}: no AWS credentials"
        # A deploy that needs the secrets, with the secrets broken.
        w.set(image="bgtest:v2", activeColor="green", secrets={**good_secrets, "ssm": ssm})
        before = w.snapshot()
        r = w.once(expect=1, timeout=90)
        msgs = r.messages()
        assert len([m for m in msgs if expect in m]) == 1, (case, r.explain())
        assert all("Traceback" not in m for m in msgs), r.explain()
        after = w.snapshot()
        assert (after.containers, after.include, after.marker, after.workers) == (
            before.containers, before.include, before.marker, before.workers
        ), case
        assert env_file.read_text() == env_before
        w.assert_serving("blue", "v1")
        assert w.container("green") is None
        plan = w.run("--plan")
        assert plan.returncode == 2 and any(expect in m for m in plan.messages()), plan.explain()
        _assert_nowhere(list(values.values()), w, [r, plan])


def test_boto3_is_imported_only_for_apps_with_secrets(sworld: tuple[SecretWorld, str, dict[str, str]]) -> None:
    """A real `--once` of a plain app leaves boto3 unimported; the same run with secrets imports it."""
    w, _, _ = sworld
    code = (
        "import sys\n"
        "from controller.cli.main import main\n"
        "rc = main(sys.argv[1:])\n"
        "print('boto3' in sys.modules or 'botocore' in sys.modules)\n"
        "sys.exit(rc)\n"
    )
    plain = {**w.doc, "spec": {k: v for k, v in w.doc["spec"].items() if k != "secrets"}}
    from tests.support.controller_run import write_spec

    for doc, expect in ((plain, "False"), (w.doc, "True")):
        write_spec(w.spec_path, doc)
        out = subprocess.run(
            [sys.executable, "-c", code, "--once", "-f", str(w.spec_path), "--state-dir", str(w.state)],
            capture_output=True, text=True, timeout=60, env={**w.env, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT),
        )
        assert out.returncode in (0, 1) and out.stdout.strip().splitlines()[-1] == expect, out.stdout + out.stderr
    assert os.path.exists(w.spec_path)


def test_docs_iam_policy_is_valid_json_with_least_privilege() -> None:
    import re

    text = (ROOT / "docs" / "secrets.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```json\n(.*?)```", text, re.S)
    policy = json.loads(block)
    actions = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {
        "ssm:GetParametersByPath",
        "ssm:GetParameters",
        "kms:Decrypt",
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
    }
    assert all(s["Effect"] == "Allow" and "*" not in s["Action"] for s in policy["Statement"])


# --------------------------------------------------------------------------- the reconciler's use of secrets (in-memory world)


class FakeSsm(SsmSource):
    """SsmSource with an in-memory store: {name: [value of version 1, value of version 2, ...]}."""

    def __init__(self, params: dict[str, list[str]]) -> None:
        super().__init__()
        self.params = params
        self.value_calls = 0
        self.fail: str | None = None

    def versions(self, cfg: SsmSecrets) -> list[SecretRef]:
        if self.fail:
            raise SecretsError(f"SSM parameters under {cfg.path}: {self.fail}")
        return sorted(
            (SecretRef(n.rsplit("/", 1)[-1], n, len(v), "SecureString") for n, v in self.params.items() if n.startswith(cfg.path)),
            key=lambda r: r.env,
        )

    def values(self, cfg: SsmSecrets, refs: list[SecretRef]) -> dict[str, str]:
        self.value_calls += 1
        return {r.env: self.params[r.parameter][r.version - 1] for r in refs}


def _fake_setup(tmp_path: Path, params: dict[str, list[str]]) -> tuple[Any, Any, FakeSsm, list[tuple[Path, str, int]]]:
    from controller.app.reconcile import Reconciler
    from controller.store.metrics import Metrics
    from controller.store.state import StateStore
    from controller.world.secrets import SecretsResolver
    from tests.fakes import world_for

    src = FakeSsm(params)
    written: list[tuple[Path, str, int]] = []
    app = _fake_app("blue")
    w = world_for(app)

    def write(path: Path, content: str, mode: int) -> None:
        written.append((path, content, mode))
        w.write_file(path, content, mode)

    rec = Reconciler(w, StateStore(tmp_path / "state"), Metrics(), resolver=SecretsResolver(write, src))
    return w, rec, src, written


def _fake_app(color: str, image: str = "dialogue:1") -> Any:
    from tests.factories import make_app

    return make_app(image=image, activeColor=color, secrets={"ssm": {"path": "/d/prod/", "region": REGION}, "envFile": "/srv/d/.env"})


def test_values_are_fetched_only_to_create_and_rotation_never_restarts_the_live_color(tmp_path: Path) -> None:
    w, rec, src, written = _fake_setup(tmp_path, {"/d/prod/API_KEY": ["k1"], "/d/prod/MONGO_URI": ["m1"]})
    r = rec.reconcile(_fake_app("blue"))
    assert r.result == "converged" and src.value_calls == 1
    blue = w.containers["dialogue-blue"]
    assert blue.env["API_KEY"] == "k1" and blue.fact.labels[LABEL_FINGERPRINT]
    assert written == [(Path("/srv/d/.env"), written[0][1], 0o600)] and "API_KEY=k1" in written[0][1]

    # Converged: versions only, no values.
    assert rec.reconcile(_fake_app("blue")).result == "converged" and src.value_calls == 1

    src.params["/d/prod/API_KEY"].append("k2")  # rotated
    w.mutations.clear()
    r = rec.reconcile(_fake_app("blue"))
    assert r.result == "converged" and w.mutations == [] and src.value_calls == 1
    assert r.status is not None
    stale = r.status.condition("SecretsStale")
    assert stale is not None and stale.status and "activeColor: green" in stale.message
    assert "k1" not in STATUS.text(r.status) and "k2" not in STATUS.text(r.status)
    assert "API_KEY=/d/prod/API_KEY:2" in (r.status.desired.secrets or ())
    p, _, _ = rec.plan_only(_fake_app("blue"))
    assert p.converged and p.secrets_stale

    r = rec.reconcile(_fake_app("green"))
    assert r.result == "converged" and src.value_calls == 2
    assert w.containers["dialogue-green"].env["API_KEY"] == "k2" and w.containers["dialogue-blue"].env["API_KEY"] == "k1"
    stale = r.status.condition("SecretsStale") if r.status is not None else None
    assert stale is not None and not stale.status


def test_live_color_with_another_difference_is_still_refused(tmp_path: Path) -> None:
    _w, rec, src, _ = _fake_setup(tmp_path, {"/d/prod/API_KEY": ["k1"]})
    rec.reconcile(_fake_app("blue"))
    src.params["/d/prod/API_KEY"].append("k2")
    r = rec.reconcile(_fake_app("blue", image="dialogue:2"))
    assert r.result == "blocked" and r.plan is not None and r.plan.blockers[0].reason == "LiveColorOutdated"
    assert r.status is not None and r.status.is_true("SecretsStale")


def test_failures_before_any_action_change_nothing(tmp_path: Path) -> None:
    w, rec, src, written = _fake_setup(tmp_path, {"/d/prod/API_KEY": ["k1"]})
    rec.reconcile(_fake_app("blue"))
    w.mutations.clear()
    src.fail = "AWS endpoint unreachable"
    r = rec.reconcile(_fake_app("green", image="dialogue:2"))
    assert r.result == "error" and r.error == "SSM parameters under /d/prod/: AWS endpoint unreachable" and w.mutations == []
    src.fail = None
    r = rec.reconcile(_fake_app("green", image="dialogue:missing"))  # a pull that fails: before values, before actions
    assert r.result == "error" and "cannot be pulled" in (r.error or "") and w.mutations == [] and src.value_calls == 1
    degraded = r.status.condition("Degraded") if r.status is not None else None
    assert degraded is not None and degraded.status and degraded.reason == "ImageError"
    assert len(written) == 1
