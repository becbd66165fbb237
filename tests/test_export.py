"""`reconcile export --to argo-rollouts` (issue 20): the export of every example spec and of any valid spec passes
the real schemas (tests/schemas/: Argo Rollouts, external-secrets; kubernetes-validate for the core kinds) and the
semantic checks of tests/support/export_checks.py; golden files pin the output; refusals are one line, exit 2."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from controller.cli.main import main
from controller.export.argo import CannotExpress, Options, export_accessory, export_app
from controller.export.render import HEADER
from controller.spec.accessory import Accessory, AccessorySpec
from controller.spec.app import AppSpec, BlueGreenApp
from tests.factories import app_doc, write_spec
from tests.support.export_checks import problems, schema_problems, semantic_problems
from tests.support.githttp import Upstream

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "export"
UPDATE = os.environ.get("BLUEGREEN_UPDATE_GOLDEN") == "1"  # rewrite the golden files from the current output


def run_export(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, list[str]]:
    code = main(["export", "--to", "argo-rollouts", *args])
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


# ------------------------------------------------------------------------------------------ golden files, examples


@pytest.mark.parametrize(("spec", "golden"), [("specs/dialogue.yaml", "dialogue"), ("specs/examples/host", "host")])
def test_golden_export_passes_every_check(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, spec: str, golden: str) -> None:
    monkeypatch.chdir(ROOT)  # the source comments name the path as given
    code, out, warnings = run_export(capsys, "-f", spec)
    assert code == 0
    text = out + "".join(f"# warning: {w}\n" for w in warnings)
    path = GOLDEN / f"{golden}.yaml"
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text(), f"export of {spec} changed: review it, then BLUEGREEN_UPDATE_GOLDEN=1"
    assert problems(documents(out)) == []
    assert out.startswith(f"{HEADER}: ") and f"# source: {spec}" in out
    assert not re.search(r"[&*]id[0-9]", out)  # no YAML anchor or alias: each value written out
    assert all(w.startswith("reconcile: export: warning: ") for w in warnings)
    assert run_export(capsys, "-f", spec)[1] == out  # deterministic: no timestamp, stable order


def test_every_example_spec_exports(capsys: pytest.CaptureFixture[str]) -> None:
    for path in [ROOT / "specs" / "dialogue.yaml", ROOT / "specs" / "examples" / "host", ROOT / "specs" / "demo"]:
        code, out, _ = run_export(capsys, "-f", str(path), "--namespace", "prod")
        assert code == 0, path
        docs = documents(out)
        assert docs and problems(docs) == [], path
        assert {d["metadata"]["namespace"] for d in docs} == {"prod"}


def test_host_export_shape(capsys: pytest.CaptureFixture[str]) -> None:
    """The mapping table, spot-checked on the host example: what goes where."""
    code, out, warnings = run_export(capsys, "-f", str(ROOT / "specs" / "examples" / "host"))
    assert code == 0
    docs = {(d["kind"], d["metadata"]["name"]): d for d in documents(out)}
    rollout = docs[("Rollout", "dialogue")]["spec"]
    bg = rollout["strategy"]["blueGreen"]
    assert (bg["activeService"], bg["previewService"], bg["autoPromotionEnabled"]) == ("dialogue", "dialogue-preview", True)
    pod = rollout["template"]["spec"]
    assert pod["containers"][0]["image"] == "dialogue:1.4.2"
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "dialogue-secrets"}}]
    assert [c["name"] for c in pod["initContainers"]] == ["wait-mongo", "wait-redis", "wait-qdrant"]
    assert {"name": "PORT", "value": "6379"} in pod["initContainers"][1]["env"]
    assert rollout["minReadySeconds"] == 2 and rollout["progressDeadlineSeconds"] == 62
    redis = docs[("StatefulSet", "redis")]["spec"]
    assert redis["updateStrategy"] == {"type": "RollingUpdate"}  # update: recreate
    assert docs[("StatefulSet", "mongo")]["spec"]["updateStrategy"] == {"type": "OnDelete"}  # update: manual
    assert redis["template"]["spec"]["containers"][0]["args"] == ["redis-server", "--appendonly", "yes"]
    assert docs[("Service", "redis")]["spec"]["clusterIP"] == "None"
    ingress = docs[("Ingress", "dialogue")]["metadata"]["annotations"]
    assert ingress["nginx.ingress.kubernetes.io/auth-secret"] == "dialogue-basic-auth"
    assert ("Secret", "dialogue-basic-auth") not in docs  # referenced, never inlined
    fields = [w.split(": ")[4] for w in warnings]
    assert fields == [
        "spec.secrets.ssm", "spec.healthCheck.path", "spec.standby",
        "spec.secrets.ssm", "spec.healthCheck.timeoutSeconds", "spec.volumes[dialogue-mongo]",
        "spec.volumes[dialogue-qdrant]",
        "spec.volumes[dialogue-redis]", "spec.backup",
    ]


def test_output_dir_has_one_file_per_kind_and_drops_only_its_own_stale_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    out.mkdir()
    (out / "analysistemplate.yaml").write_text(f"{HEADER}: 1 documents from an older spec\n")  # ours, now stale
    (out / "kustomization.yaml").write_text("resources: []\n")  # the operator's
    code, stdout, _ = run_export(capsys, "-f", str(ROOT / "specs" / "examples" / "host"), "-o", str(out))
    assert code == 0 and stdout == ""
    names = sorted(p.name for p in out.iterdir())
    assert names == ["externalsecret.yaml", "ingress.yaml", "kustomization.yaml", "rollout.yaml", "service.yaml", "statefulset.yaml"]
    assert {d["kind"] for d in documents((out / "service.yaml").read_text())} == {"Service"}
    every = [d for n in names if n != "kustomization.yaml" for d in documents((out / n).read_text())]
    assert len(every) == 12 and problems(every) == []


# --------------------------------------------------------------------------------------------- refusals: exit 2


def test_a_spec_it_cannot_express_exits_2_naming_the_field_and_writes_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = tmp_path / "specs"
    d.mkdir()
    write_spec(d / "a.yaml", app_doc("a", checks={"beforeSwitch": [{"command": ["/usr/local/bin/smoke"]}]}))
    write_spec(d / "b.yaml", app_doc("b", ports={"blue": 18083, "green": 18084}, marker="/state/b/active"))
    out = tmp_path / "out"
    code, stdout, err = run_export(capsys, "-f", str(d), "-o", str(out))
    assert code == 2 and stdout == "" and not out.exists()
    assert err[0].startswith(f"reconcile: export: {d / 'a.yaml'}: spec.checks.beforeSwitch[0].command: '/usr/local/bin/smoke' is a program on the host")
    assert err[-1] == "reconcile: export: nothing written" and len(err) == 2


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["-f", "specs/dialogue.yaml", "--to", "helm"], "invalid choice: 'helm'"),
        (["-f", "specs/dialogue.yaml", "--git-url", "file:///x", "--to", "argo-rollouts"], "-f PATH or --git-url URL"),
        (["-f", "specs/dialogue.yaml", "--to", "argo-rollouts", "--namespace", "Prod"], "not a namespace name"),
        (["-f", "specs/nowhere", "--to", "argo-rollouts"], "no such file or directory"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str], needle: str) -> None:
    monkeypatch.chdir(ROOT)
    try:
        code = main(["export", *argv])
    except SystemExit as e:  # argparse's own refusals (an unknown --to)
        code = int(str(e.code))
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and needle in err and err.startswith("reconcile: export: "), err


def test_git_url_exports_the_commit_in_force_and_names_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from controller.runtime.source import GitSource, config_from_options
    from tests.test_gitops import source_args

    up = Upstream(tmp_path / "srv", "deploy", None)
    files = {f"specs/{p.name}": p.read_text() for p in (ROOT / "specs" / "examples" / "host").glob("*.yaml")}
    sha = up.commit(files, "host")
    up.push()
    url = f"file://{up.bare}"
    state = tmp_path / "state"
    code, _, err = run_export(capsys, "--git-url", url, "--git-path", "specs", "--state-dir", str(state))
    assert code == 2 and "no commit in force" in err[0]  # never fetched: export reads, it does not fetch
    assert GitSource(config_from_options(source_args(url)), state).sync() is True
    capsys.readouterr()  # the sync's own log line
    code, out, _ = run_export(capsys, "--git-url", url, "--git-path", "specs", "--state-dir", str(state))
    assert code == 0
    assert out.splitlines()[0] == f"{HEADER}: 12 documents from {url} main specs at commit {sha}"
    assert "# source: specs/redis.yaml (Accessory redis, generation " in out and f"commit {sha})" in out
    assert problems(documents(out)) == []


# ------------------------------------------------------------------------------ the checks themselves can fail


def _host_docs() -> list[dict[str, Any]]:
    from controller.spec.directory import select

    sel = select(ROOT / "specs" / "examples" / "host", host=False)
    accs = {a.name: a for a in sel.accessories}
    exports = [export_app(a, accs, Options()) for a in sel.apps] + [export_accessory(a, Options()) for a in accs.values()]
    return [d for e in exports for d in e.documents]


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda ds: _find(ds, "Rollout", "dialogue")["spec"]["strategy"]["blueGreen"].update(scaleDownDelay=3), "Additional properties"),
        (lambda ds: _find(ds, "Rollout", "dialogue")["spec"]["template"]["spec"]["containers"][0].update(ports=[{"containerPort": "http"}]), "as a Deployment's"),
        (lambda ds: _find(ds, "ExternalSecret", "mongo-secrets")["spec"]["secretStoreRef"].update(kind="Vault"), "is not one of"),
        (lambda ds: _find(ds, "Service", "redis")["spec"].update(clusterIP=7), "is not of type"),
        (lambda ds: ds.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"K": "v"}}), "inlines secret data"),
        (lambda ds: _find(ds, "Service", "dialogue-preview")["spec"]["selector"].update({"app.kubernetes.io/name": "other"}), "matches no pod template"),
        (lambda ds: _find(ds, "Service", "qdrant")["spec"]["ports"][0].update(targetPort=9999), "no container port"),
        (lambda ds: _find(ds, "Rollout", "dialogue")["spec"]["strategy"]["blueGreen"].update(previewService="dialogue"), "are both dialogue"),
        (lambda ds: _find(ds, "Rollout", "dialogue")["spec"]["strategy"]["blueGreen"].update(prePromotionAnalysis={"templates": [{"templateName": "gone"}]}), "not exported"),
        (lambda ds: _find(ds, "Ingress", "dialogue")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"].update(port={"name": "web"}), "has no port web"),
        (lambda ds: _find(ds, "Ingress", "dialogue")["metadata"]["annotations"].clear(), "no Basic Auth"),
        (lambda ds: _find(ds, "StatefulSet", "mongo")["spec"]["template"]["spec"]["containers"][0].update(envFrom=[{"secretRef": {"name": "mongo-root"}}]), "no ExternalSecret makes"),
        (lambda ds: _find(ds, "StatefulSet", "redis")["metadata"].update(name="Redis_1"), "not a valid DNS label"),
    ],
)
def test_each_check_catches_what_it_is_for(mutate: Any, needle: str) -> None:
    docs = copy.deepcopy(_host_docs())
    assert problems(docs) == []
    mutate(docs)
    found = problems(docs)
    assert any(needle in p for p in found), found


# -------------------------------------------------------------------------- property: any valid spec exports


ENV_NAME = st.from_regex(r"[A-Z_][A-Z0-9_]{0,7}", fullmatch=True).filter(lambda s: not s.startswith("BLUEGREEN_"))
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=12)
SECONDS = st.sampled_from([0.5, 1, 2, 2.5, 30, 90.25])
PATHS = st.sampled_from(["/actuator/health", "/health?full=1", "/", "/ready%20now"])
ACCESSORY_NAMES = ("mongo", "redis", "qdrant", "7zip")


@st.composite
def secrets(draw: st.DrawFn) -> dict[str, Any]:
    ssm: dict[str, Any] = {"path": draw(st.sampled_from(["/app/prod/", "/app/prod", "/", "/a.b/c-d/"]))}
    if draw(st.booleans()):
        ssm["region"] = "eu-west-1"
    names = draw(st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,8}", fullmatch=True), max_size=3, unique=True))
    if draw(st.booleans()) and names:
        ssm["names"] = names
    if draw(st.booleans()) and names:
        ssm["rename"] = {n: f"ENV_{i}" for i, n in enumerate(names)}
    return {"ssm": ssm}


@st.composite
def accessory_doc(draw: st.DrawFn, name: str) -> dict[str, Any]:
    ports = draw(st.lists(st.integers(1, 65535), max_size=2, unique=True))
    spec: dict[str, Any] = {
        "image": draw(st.sampled_from(["redis:7.2", "mongo:7.0", "qdrant/qdrant:v1.9.2"])),
        "ports": {str(p): 20000 + i + 10 * ACCESSORY_NAMES.index(name) for i, p in enumerate(ports)},
        "volumes": draw(st.dictionaries(st.sampled_from(["data", "Data_1", "data.1", "logs"]), st.sampled_from(["/data", "/logs", "/var/x"]), max_size=2)),
        "network": "net",
        "update": draw(st.sampled_from(["manual", "recreate"])),
        "restartPolicy": draw(st.sampled_from(["no", "always", "unless-stopped", "on-failure"])),
        "env": draw(st.dictionaries(ENV_NAME, TEXT, max_size=2)),
    }
    if draw(st.booleans()):
        spec["command"] = ["serve", "--port", "1"]
    kind = draw(st.sampled_from(["none", "command", "tcp", "http"]))
    if kind == "command":
        spec["healthCheck"] = {"command": ["ping"], "timeoutSeconds": draw(SECONDS)}
    elif kind == "tcp":
        spec["healthCheck"] = {"tcp": draw(st.integers(1, 65535))}
    elif kind == "http":
        spec["healthCheck"] = {"http": {"port": draw(st.integers(1, 65535)), "expectStatus": draw(st.sampled_from([200, 200, 204, 500]))}}
    if draw(st.booleans()):
        spec["secrets"] = draw(secrets())
    if spec["update"] == "recreate" and draw(st.booleans()):
        spec["backup"] = {"command": ["sh", "-c", "true"]}
    return {"apiVersion": "bluegreen/v1", "kind": "Accessory", "metadata": {"name": name}, "spec": spec}


@st.composite
def host(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One app and its accessories, drawn field by field over the models (docs validated by them below)."""
    name = draw(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True).filter(lambda n: n not in ACCESSORY_NAMES))
    deps = draw(st.lists(st.sampled_from(ACCESSORY_NAMES[:3] * 3 + ACCESSORY_NAMES[3:]), max_size=3, unique=True))
    spec: dict[str, Any] = {
        "image": draw(st.sampled_from(["dialogue:1", "registry.example.com/team/app:2.0", "app@sha256:" + "a" * 64])),
        "containerPort": draw(st.integers(1, 65535)),
        "env": draw(st.dictionaries(ENV_NAME, TEXT, max_size=3)),
        "healthCheck": {
            "path": draw(PATHS),
            "expectStatus": draw(st.sampled_from([200, 200, 200, 204, 302, 503])),
            "intervalSeconds": draw(st.sampled_from([0.5, 1, 2])),
            "requestTimeoutSeconds": draw(st.sampled_from([0.5, 2])),
            "stableSeconds": draw(st.sampled_from([0, 1.5, 2])),
            "timeoutSeconds": draw(SECONDS),
        },
        "standby": draw(st.sampled_from(["keep", "stop"])),
        "drainSeconds": draw(SECONDS),
        "restartPolicy": draw(st.sampled_from(["no", "always", "unless-stopped", "on-failure"])),
        "stopTimeoutSeconds": draw(st.integers(0, 600)),
    }
    if deps:
        spec["dependsOn"], spec["network"] = deps, "net"
    if draw(st.booleans()):
        spec["secrets"] = draw(secrets())
        if draw(st.booleans()):
            spec["secrets"]["envFile"] = f"/run/{name}.env"
    if draw(st.booleans()):
        spec["resources"] = draw(st.fixed_dictionaries({}, optional={
            "memory": st.just("1g"), "memoryReservation": st.just("512m"), "cpus": st.sampled_from([0.5, 1.25]), "pidsLimit": st.just(100)}))
    if draw(st.booleans()):
        spec["preview"] = {"image": "dialogue:next", "env": draw(st.dictionaries(ENV_NAME, TEXT, max_size=2))}
    if draw(st.booleans()):
        check = st.one_of(
            st.builds(lambda p, s, b: {"http": {"path": p, "expectStatus": s, **({"bodyContains": b} if b else {})}},
                      PATHS, st.sampled_from([200, 200, 201, 404]), st.one_of(st.none(), TEXT.filter(bool))),
            st.just({"http": {"path": "/ok"}}),
            st.just({"command": ["/usr/local/bin/smoke"]}),
        )
        spec["checks"] = {"beforeSwitch": draw(st.lists(check, min_size=1, max_size=2))}
    hooks = draw(st.fixed_dictionaries({}, optional={
        "beforeSwitch": st.just({"command": ["migrate", "up"], "timeoutSeconds": 90.5}), "afterSwitch": st.just({"command": ["notify"]})}))
    if hooks:
        spec["hooks"] = hooks
    if draw(st.booleans()):
        verify: dict[str, Any] = {"windowSeconds": draw(st.sampled_from([5, 60, 90.5])), "maxErrorRate": 0.01, "minRequests": 5}
        if draw(st.booleans()):
            verify["maxLatencyP99Ms"] = 250
        if draw(st.booleans()):
            verify["accessLog"] = f"/var/log/nginx/{name}.log"
        if draw(st.booleans()):
            query = draw(st.sampled_from(['up{job="{app}"}', 'errors{rev="{revision}"}', 'x{color="{color}"}', "vector(1)"]))
            verify["prometheus"] = {"url": "http://prom:9090", "query": query, "max": 0.5}
        spec["verify"] = verify
    if draw(st.booleans()):
        spec["labels"] = draw(st.dictionaries(st.sampled_from(["team", "example.com/owner", "a.b_c-d", "bad key", "x" * 70]), TEXT, max_size=2))
    if spec["standby"] == "keep" and draw(st.booleans()):
        spec["failover"] = "previous"
    doc = app_doc(name, **spec)
    if "preview" in spec:
        doc["spec"]["nginx"]["switch"] = "flag"
    return doc, [draw(accessory_doc(n)) for n in deps]


def _cannot_express(app: BlueGreenApp, accessories: list[Accessory]) -> bool:
    """Whether the spec uses something docs/export.md lists as refused."""
    s = app.spec
    checks = s.checks.beforeSwitch if s.checks is not None else []
    bad_claims = any(
        len({re.sub(r"[^a-z0-9-]", "-", v.lower()).strip("-") for v in a.spec.volumes}) < len(a.spec.volumes) for a in accessories
    )
    return (
        any(not re.match(r"^[a-z]", n) for n in [app.name, *(a.name for a in accessories)])
        or not 200 <= s.healthCheck.expectStatus <= 399
        or any(c.command is not None or (c.http is not None and not 200 <= c.http.expectStatus <= 299) for c in checks)
        or any(" " in k or len(k) > 63 for k in s.labels)
        or (s.verify is not None and s.verify.prometheus is not None and "{color}" in s.verify.prometheus.query)
        or any(a.spec.healthCheck is not None and a.spec.healthCheck.http is not None
               and not 200 <= a.spec.healthCheck.http.expectStatus <= 399 for a in accessories)
        or bad_claims
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(host())
def test_any_valid_spec_exports_to_manifests_that_pass_every_check(drawn: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    doc, acc_docs = drawn
    try:
        app = BlueGreenApp.model_validate(doc)
        accessories = [Accessory.model_validate(a) for a in acc_docs]
    except ValidationError:
        event("invalid spec")
        return  # not a valid spec: the loader refuses it before export (tests/test_spec_input.py)
    opts = Options(namespace="ns")
    try:
        exports = [export_app(app, {a.name: a for a in accessories}, opts)] + [export_accessory(a, opts) for a in accessories]
    except CannotExpress as e:
        event("refused")
        assert _cannot_express(app, accessories), f"refused a spec docs/export.md says it can express: {e}"
        assert re.match(r"^(metadata\.name|spec\.[A-Za-z.\[\]0-9]+): ", str(e)) and "\n" not in str(e)
        return
    assert not _cannot_express(app, accessories), "exported a spec it should have refused"
    event("exported")
    docs = [d for e in exports for d in e.documents]
    assert [p for d in docs for p in schema_problems(d)] == []
    assert semantic_problems(docs) == []
    for ex, src in zip(exports, [doc, *acc_docs], strict=True):
        for note in ex.notes:  # every warning names a field of that spec (or one whose default acts)
            top = re.split(r"[.\[]", note.field.removeprefix("spec."))[0]
            assert top in src["spec"] or top in ("standby", "healthCheck"), note


# ----------------------------------------------------------------------------------------------- the docs table


def _fields(model: type[BaseModel], prefix: str) -> list[str]:
    out: list[str] = []
    for name, info in model.model_fields.items():
        out.append(f"{prefix}{name}")
        for arg in [info.annotation, *getattr(info.annotation, "__args__", ())]:
            for inner in [arg, *getattr(arg, "__args__", ())]:
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    out += _fields(inner, f"{prefix}{name}.")
    return sorted(set(out))


def test_the_docs_table_says_where_every_spec_field_goes() -> None:
    """docs/export.md has a row per field of each kind (its own section), each saying maps / approximated / ..."""
    text = (ROOT / "docs" / "export.md").read_text()
    sections = dict(re.findall(r"^## (BlueGreenApp|Accessory)\b[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    for kind, model in (("BlueGreenApp", AppSpec), ("Accessory", AccessorySpec)):
        rows = dict(re.findall(r"^\| `(spec\.[A-Za-z0-9.]+)` \| ([a-z, ]+) \|", sections[kind], re.M))
        missing = [f for f in _fields(model, "spec.") if f not in rows]
        assert not missing, f"docs/export.md has no {kind} row for {missing}"
        extra = set(rows) - set(_fields(model, "spec."))
        assert not extra, f"docs/export.md has {kind} rows for fields that do not exist: {sorted(extra)}"
        for field, verdict in rows.items():
            assert set(verdict.split(", ")) <= {"maps", "approximated", "no equivalent", "refused"}, (field, verdict)
