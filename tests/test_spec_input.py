"""Spec loading and validation against hostile or surprising input (issue 10, items 2, 7, 8, 9, 14).

In-process: the YAML loader (duplicate keys, YAML 1.1 typing of env/labels, nesting and alias bounds),
the path rules, bindAddress canonical form and exposure opt-in, the planner's HostIp comparison; and,
against the real dockerd, how the Docker driver classifies client-side errors (`network: host`).
The same cases through the real CLI are in tests/test_bad_input.py and tests/test_real_input.py.
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

import pytest
import yaml

from controller.app.plan import matches
from controller.cli.main import build_parser
from controller.drivers.containers import DockerDriver
from controller.kernel.errors import DockerError, DockerUnavailable, SpecError
from controller.spec.app import BlueGreenApp, check_path, parse_app
from controller.world.facts import LABEL_APP, LABEL_REVISION, ContainerFact
from controller.world.protocol import ContainerRequest
from tests.factories import app_doc, make_app
from tests.support.containers import remove_containers

HEAD = "apiVersion: bluegreen/v1\nkind: BlueGreenApp\nmetadata:\n  name: app\nspec:\n  image: app:1\n  activeColor: blue\n"


def load(text: str) -> BlueGreenApp:
    return parse_app(text, "app.yaml")


def refused(text: str) -> str:
    with pytest.raises(SpecError) as e:
        load(text)
    message = str(e.value)
    assert "\n" not in message and message.startswith("app.yaml: ")
    return message


# ------------------------------------------------------------------------------------ YAML


def test_duplicate_keys_are_an_error_naming_the_key_and_both_lines() -> None:
    msg = refused(HEAD + "  image: app:2\n")
    assert msg == "app.yaml: line 8 column 3: invalid YAML: duplicate key 'image' (first on line 6)"
    assert "duplicate key 'A' (first on line 9)" in refused(HEAD + "  env:\n    A: x\n    A: y\n")
    assert "duplicate key 'metadata'" in refused(HEAD + "metadata: {name: other}\n")


def test_merge_keys_are_not_duplicates_and_keep_yaml_merge_semantics() -> None:
    app = load(HEAD + "  labels: &base {team: core, tier: 1.10}\n  env: {<<: *base, tier: '2', OWN: 01}\n")
    assert app.spec.env == {"team": "core", "tier": "2", "OWN": "01"}  # the mapping's own key wins
    assert app.spec.labels == {"team": "core", "tier": "1.10"}


@pytest.mark.parametrize(
    "written",
    ["1.10", "01234", "NO", "no", "off", "Yes", "12:30:00", "0x1F", "1.0e+3", ".inf", ".NaN", "2001-12-14", "+1", "1_000", "true", "~x"],
)
def test_env_and_labels_keep_the_text_the_operator_wrote(written: str) -> None:
    # YAML 1.1 typed these: 1.10 -> 1.1, 01234 -> 668, NO -> false, 12:30:00 -> 45000 ...
    typed = yaml.safe_load(f"v: {written}")["v"]
    assert typed != written or isinstance(typed, str)  # what the plain loader made of it (most: not the text)
    app = load(HEAD + f"  env:\n    V: {written}\n  labels:\n    v: {written}\n")
    assert app.spec.env == {"V": written}
    assert app.spec.labels == {"v": written}


def test_env_names_that_yaml_would_type_stay_names() -> None:
    app = load(HEAD + "  env: {ON: 1, NO: 2, Off: 3, TRUE: 4}\n")
    assert app.spec.env == {"ON": "1", "NO": "2", "Off": "3", "TRUE": "4"}  # not {True: ..., False: ...}


def test_env_quoted_and_tagged_values_and_aliases() -> None:
    app = load(HEAD + "  env:\n    A: '1.10'\n    B: \"x: y\"\n    C: &v 007\n    D: *v\n    E: ''\n")
    assert app.spec.env == {"A": "1.10", "B": "x: y", "C": "007", "D": "007", "E": ""}


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("", "env A has no value (YAML null): write '' for an empty string"),
        ("~", "env A has no value"),
        ("null", "env A has no value"),
        ("[1, 2]", "env A must be a string, number or boolean, not a list"),
        ("{x: 1}", "not a mapping"),
        ('"a\\0b"', "env A contains a NUL byte"),
    ],
)
def test_env_values_that_are_not_text_are_refused(value: str, needle: str) -> None:
    assert needle in refused(HEAD + f"  env:\n    A: {value}\n")


def test_deep_nesting_is_the_files_error_not_a_recursion_error() -> None:
    for depth in (33, 600, 5000):
        msg = refused(HEAD + "  x: " + "[" * depth + "]" * depth + "\n")
        assert "invalid YAML: nested deeper than 32 levels" in msg, msg
    msg = refused(HEAD + "  x: " + "{a: " * 200 + "1" + "}" * 200 + "\n")
    assert "nested deeper than 32 levels" in msg
    # Within the bound nesting is just an unknown field.
    assert "spec.x: unknown field" in refused(HEAD + "  x: " + "[" * 20 + "]" * 20 + "\n")


def test_alias_expansion_is_bounded() -> None:
    bomb = "".join(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]\n" for i in range(1, 8))
    msg = refused("x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n" + bomb)
    assert "more than 20000 YAML nodes once aliases are expanded" in msg
    assert "more than 20000 YAML nodes" in refused("a: &a [*a]\n")


def test_any_exception_while_validating_becomes_that_files_spec_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a future validator or library bug raises, one file must not take the other apps down."""

    def boom(*_a: Any, **_k: Any) -> Any:
        raise KeyError("surprise")

    monkeypatch.setattr(BlueGreenApp, "model_validate", boom)
    assert refused(HEAD) == "app.yaml: cannot load: KeyError: 'surprise'"

    def deep(*_a: Any, **_k: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(BlueGreenApp, "model_validate", deep)
    assert refused(HEAD) == "app.yaml: nested too deeply to load"


# ------------------------------------------------------------------------------------ paths


@pytest.mark.parametrize("path", ["/var/lib/bluegreen/app/active", "/etc/nginx/conf.d/app.green", "/a/b-c_d.e+f=g@h~i:j,k"])
def test_safe_paths_are_kept(path: str) -> None:
    assert check_path(path) == path


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("var/lib/x", "must be an absolute path"),
        ("", "must be an absolute path"),
        ("/", "is not a normalised absolute path"),
        ("/a//b", "is not a normalised absolute path"),
        ("/a/./b", "is not a normalised absolute path"),
        ("/a/../b", "is not a normalised absolute path"),
        ("/a/b/", "is not a normalised absolute path"),
        ("/a/b\nserver { listen 80; }", "contains '\\n'"),
        ("/a/b\r", "contains '\\r'"),
        ("/a/b\x00", "contains '\\x00'"),
        ("/a/\x1b[31m", "contains '\\x1b'"),
        ("/a/b c", "contains ' '"),
        ("/a/b\tc", "contains '\\t'"),
        ("/a/b;", "contains ';'"),
        ("/a/{b}", "contains '{'"),
        ("/a/b}", "contains '}'"),
        ("/a/'b'", "contains \"'\""),
        ('/a/"b"', "contains '\"'"),
        ("/a/$host", "contains '$'"),
        ("/a/#b", "contains '#'"),
        ("/a/b\\c", "contains '\\\\'"),
        ("/a/\u00e9", "contains 'é'"),
        ("/a/\u2028", "contains '\\u2028'"),
        ("/" + "a" * 2000, "longer than 1024"),
    ],
)
def test_unsafe_paths_are_refused(path: str, needle: str) -> None:
    with pytest.raises(ValueError) as e:
        check_path(path)
    assert needle in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"marker": "/etc/nginx/conf.d/app.green"}, "spec.marker and spec.nginx.flagFile are both /etc/nginx/conf.d/app.green"),
        ({"marker": "/n/app.conf", "nginx": {"upstreamFile": "/n/app.conf"}}, "spec.marker and spec.nginx.upstreamFile are both"),
        ({"nginx": {"upstreamFile": "/n/a.conf", "flagFile": "/n/a.conf"}}, "spec.nginx.upstreamFile and spec.nginx.flagFile are both"),
        (
            {"marker": "/s/env", "secrets": {"ssm": {"path": "/p/", "region": "us-east-1"}, "envFile": "/s/env"}},
            "spec.marker and spec.secrets.envFile are both /s/env",
        ),
        ({"marker": "/n/app.conf/active", "nginx": {"upstreamFile": "/n/app.conf"}}, "spec.marker (/n/app.conf/active) is under spec.nginx.upstreamFile"),
        ({"marker": "/n/a", "nginx": {"upstreamFile": "/n/a/b.conf"}}, "spec.nginx.upstreamFile (/n/a/b.conf) is under spec.marker (/n/a)"),
    ],
)
def test_one_apps_written_files_must_not_collide(spec: dict[str, Any], needle: str) -> None:
    doc = app_doc("app", **{"nginx": {"upstreamFile": "/etc/nginx/conf.d/app.upstream.conf"}, **spec})
    if "nginx" in spec:
        doc["spec"]["nginx"] = spec["nginx"]
    msg = refused(yaml.safe_dump(doc))
    assert needle in msg, msg


def test_the_flag_file_does_not_count_with_switch_reload() -> None:
    # With switch: reload no flag file is read or written: a marker at its default path is fine.
    app = make_app("app", marker="/etc/nginx/conf.d/app.green", nginx={"upstreamFile": "/etc/nginx/conf.d/app.upstream.conf", "switch": "reload"})
    assert str(app.marker_path) == "/etc/nginx/conf.d/app.green"


def test_state_dir_from_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BLUEGREEN_STATE_DIR", "/var/lib/bg\n; evil")
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--plan", "-f", "/x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--state-dir: '/var/lib/bg\\n; evil' contains '\\n'" in err
    monkeypatch.setenv("BLUEGREEN_STATE_DIR", "/var/lib/bg")
    assert str(build_parser().parse_args(["--plan", "-f", "/x"]).state_dir) == "/var/lib/bg"


# ------------------------------------------------------------------------------------ healthCheck.path


@pytest.mark.parametrize("path", ["/actuator/health", "/health?full=1&x=%20y", "/a/b;v=1/c", "/~user/@x:y!$'()*+,="])
def test_url_paths_are_accepted(path: str) -> None:
    assert make_app("app", healthCheck={"path": path}).spec.healthCheck.path == path


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/actuator/\thealth", "it contains '\\t'"),
        ("/a b", "it contains ' '"),
        ("/a\nHost: evil", "it contains '\\n'"),
        ("/a#frag", "it contains '#'"),
        ("/h\u00e9", "it contains '\\xe9'"),
        ("/a%2", "'%' not followed by two hex digits"),
        ("/a\\b", "it contains '\\\\'"),
        ("/a[0]", "it contains '['"),
        ("health", "must start with /"),
    ],
)
def test_paths_that_are_no_url_path_are_refused(path: str, needle: str) -> None:
    doc = app_doc("app", healthCheck={"path": path})
    msg = refused(yaml.safe_dump(doc))
    assert msg.startswith("app.yaml: spec.healthCheck.path: ") and needle in msg, msg


# ------------------------------------------------------------------------------------ bindAddress, network


@pytest.mark.parametrize(("written", "canonical"), [("0:0:0:0:0:0:0:1", "::1"), ("::0001", "::1"), ("127.0.0.2", "127.0.0.2")])
def test_bind_address_is_stored_canonical(written: str, canonical: str) -> None:
    assert make_app("app", bindAddress=written).spec.bindAddress == canonical


@pytest.mark.parametrize("addr", ["0.0.0.0", "::", "0:0:0:0:0:0:0:0", "192.168.1.10", "10.0.0.1", "172.17.0.1", "fe80::1", "::ffff:127.0.0.1"])
def test_non_loopback_bind_address_needs_the_opt_in(addr: str) -> None:
    msg = refused(yaml.safe_dump(app_doc("app", bindAddress=addr)))
    shown = str(ipaddress.ip_address(addr))
    assert f"spec: bindAddress {shown} is not a loopback address" in msg
    assert "past Nginx (no Basic Auth, actuator included)" in msg and "ufw" in msg and "exposeBeyondLoopback: true" in msg
    assert make_app("app", bindAddress=addr, exposeBeyondLoopback=True).spec.bindAddress == shown


@pytest.mark.parametrize("network", ["host", "none", "container:db", "container:0123abcd"])
def test_networks_without_published_ports_are_refused(network: str) -> None:
    msg = refused(yaml.safe_dump(app_doc("app", network=network)))
    assert f"spec.network: '{network}' is not allowed: the app must publish its port" in msg


def _fact(host_ip: str | None, app: BlueGreenApp) -> ContainerFact:
    return ContainerFact(
        name="app-blue",
        id="x",
        image=app.spec.image,
        image_id="sha256:x",
        labels={LABEL_APP: "app", LABEL_REVISION: app.revision("blue")},
        state="running",
        host_ip=host_ip,
        host_port=app.spec.ports.blue,
    )


@pytest.mark.parametrize("reported", ["::1", "0:0:0:0:0:0:0:1", "0::1"])
def test_planner_compares_canonical_host_ips(reported: str) -> None:
    """A non-canonical bindAddress used to deploy, then stay LiveColorOutdated forever (Docker says `::1`)."""
    app = make_app("app", bindAddress="0:0:0:0:0:0:0:1")
    assert matches(app, "blue", _fact(reported, app), app.revision("blue"))
    assert not matches(app, "blue", _fact("127.0.0.1", app), app.revision("blue"))
    assert matches(app, "blue", _fact(None, app), app.revision("blue"))


def test_docker_client_side_errors_are_docker_errors_not_an_unreachable_daemon(docker_client: Any, test_images: dict[str, str]) -> None:
    """`network: host` with a published port is refused by docker-py itself (InvalidArgument, a DockerException):
    it was reported as "Docker daemon unreachable" and retried forever as a temporary failure."""
    name = f"t{uuid.uuid4().hex[:8]}"
    driver = DockerDriver()
    req = ContainerRequest(
        name=f"{name}-blue",
        image="bgtest:v1",
        labels={LABEL_APP: name, "bluegreen.test": "spec-input"},
        env={},
        container_port=8081,
        host_ip="127.0.0.1",
        host_port=18999,
        network="host",
    )
    try:
        with pytest.raises(DockerError) as e:
            driver.create(req)
        assert not isinstance(e.value, DockerUnavailable)
        assert str(e.value) == f'create {name}-blue: "host" network_mode is incompatible with port_bindings'
        assert isinstance(e.value.__cause__, Exception)
        # A malformed daemon URL is the operator's error too, said as it is.
        with pytest.raises(DockerError) as bad_url:
            DockerDriver(base_url="bogus://x").list_containers()
        assert not isinstance(bad_url.value, DockerUnavailable) and "Invalid bind address protocol" in str(bad_url.value)
        # A daemon that does not answer is still temporary.
        for url in ("unix:///nonexistent/docker.sock", "tcp://127.0.0.1:9"):
            with pytest.raises(DockerUnavailable, match="Docker daemon unreachable"):
                DockerDriver(base_url=url, timeout=5).list_containers()
    finally:
        remove_containers(docker_client, [{"label": f"{LABEL_APP}={name}"}])
