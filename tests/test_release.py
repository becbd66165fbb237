"""`reconcile deploy / rollback / promote` refusing, on real files (issue 12 items 4-5): a spec that is not ours
to edit, one someone other than root could have written, one that does not describe what runs. Each refusal is
exit 2 and one line on stderr, and leaves the file byte-identical (same bytes, same inode, same mtime).

The commands run in-process (`controller.cli.main.main`) against the real dockerd, with no container of the app and
an Nginx control URL nobody listens on: what Nginx serves is unknown. The converging runs are in
tests/test_real_release.py.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.kernel import files
from controller.kernel.errors import SpecError
from tests.support.net import free_port

INTRUDER = "bgtest-nobody"  # the second user of tests/test_files.py


def spec_text(app: str, *, image: str = "bgtest:v1", color: str = "blue", extra: str = "") -> str:
    control = free_port()  # nobody listens: the route is unknown
    return (
        "# demo spec: CI bumps the image\n"
        "apiVersion: bluegreen/v1\n"
        "kind: BlueGreenApp\n"
        f"metadata: {{name: {app}}}\n"
        "spec:\n"
        f"  image: {image}    # the release\n"
        f"  activeColor: {color}\n"
        f"  ports: {{blue: {free_port()}, green: {free_port()}}}\n"
        f"{extra}"
        f"  marker: /tmp/bgtest-release-{app}/active\n"
        "  nginx:\n"
        f"    upstreamFile: /tmp/bgtest-release-{app}/up.conf\n"
        "    testCommand: [/bin/true]\n"
        "    reloadCommand: [/bin/true]\n"
        f"    controlUrl: http://127.0.0.1:{control}\n"
    )


@pytest.fixture
def app() -> str:
    return f"bgrel-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def arena() -> Iterator[Path]:
    """A root-owned 0755 directory under /tmp (trusted; reachable by the second user)."""
    d = Path(tempfile.mkdtemp(prefix="bgtest-release-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def intruder() -> tuple[int, int]:
    if os.geteuid() != 0:
        pytest.skip("acting as a second user needs root (the controller runs as root)")
    try:
        pw = pwd.getpwnam(INTRUDER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", INTRUDER], check=False, capture_output=True, timeout=60)
        pw = pwd.getpwnam(INTRUDER)
    return pw.pw_uid, pw.pw_gid


def fingerprint(path: Path) -> tuple[bytes, int, int, int, int, int]:
    st = os.lstat(path)
    return path.read_bytes(), st.st_ino, st.st_mtime_ns, st.st_mode, st.st_uid, st.st_gid


def refused(argv: list[str], path: Path, capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    before = fingerprint(path)
    assert main(argv) == 2
    out, errs = capsys.readouterr()
    lines = errs.splitlines()
    assert len(lines) == 1 and lines[0].startswith("reconcile: "), errs
    for n in needles:
        assert n in lines[0], lines[0]
    assert out == ""  # no diff for a refused edit
    assert fingerprint(path) == before
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []  # no temporary file left
    return lines[0]


NOT_OURS = {
    "two documents": ("{spec}---\n{spec}", "holds 2 YAML documents"),
    "another kind": ("{spec}", "kind is not 'BlueGreenApp'"),
    "another apiVersion": ("{spec}", "apiVersion is not 'bluegreen/v1'"),
    "an anchored image": ("{spec}", "spec.image: has an anchor or alias"),
    "a flow-style spec": ("apiVersion: bluegreen/v1\nkind: BlueGreenApp\nmetadata: {{name: x}}\nspec: {{image: 'a:1', activeColor: blue}}\n", "flow style"),
    "not YAML": ("spec: [\n", "invalid YAML"),
}


@pytest.mark.parametrize("case", sorted(NOT_OURS))
@pytest.mark.parametrize("command", ["deploy", "rollback", "promote"])
def test_a_spec_that_is_not_ours_to_edit_is_refused(case: str, command: str, app: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template, needle = NOT_OURS[case]
    spec = spec_text(app, extra="  preview: {image: 'bgtest:v2'}\n")
    text = template.format(spec=spec)
    if case == "another kind":
        text = text.replace("kind: BlueGreenApp", "kind: Deployment")
    if case == "another apiVersion":
        text = text.replace("bluegreen/v1", "apps/v1")
    if case == "an anchored image":
        text = text.replace("image: bgtest:v1", "image: &img bgtest:v1")
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    argv = [command, "-f", str(path)] + (["--image", "bgtest:v2"] if command == "deploy" else [])
    refused(argv, path, capsys, str(path), needle)


def test_a_spec_someone_else_could_have_written_is_refused(arena: Path, intruder: tuple[int, int], app: str, capsys: pytest.CaptureFixture[str]) -> None:
    theirs = arena / "theirs.yaml"
    theirs.write_text(spec_text(app))
    os.chown(theirs, *intruder)
    refused(["deploy", "-f", str(theirs), "--image", "bgtest:v2", "--force"], theirs, capsys, f"is owned by uid {intruder[0]}, not root")

    writable = arena / "writable.yaml"
    writable.write_text(spec_text(app))
    os.chmod(writable, 0o664)
    refused(["deploy", "-f", str(writable), "--image", "bgtest:v2", "--force"], writable, capsys, "is writable by group (mode 0664)")

    # A link the second user made (in a sticky directory) to a root spec: never followed, for reading or writing.
    sticky = arena / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    target = arena / "root.yaml"
    target.write_text(spec_text(app))
    subprocess.run(["ln", "-s", str(target), str(sticky / "link.yaml")], user=intruder[0], group=intruder[1], extra_groups=[], check=True, timeout=10)
    before = fingerprint(target)
    refused(["deploy", "-f", str(sticky / "link.yaml"), "--image", "bgtest:v2", "--force"], sticky / "link.yaml", capsys, "refused")
    assert fingerprint(target) == before


def test_a_spec_that_disagrees_with_what_nginx_serves_is_refused_unless_forced(app: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(spec_text(app))
    # No container, no Nginx answer: nothing shows that blue serves bgtest:v1.
    refused(["deploy", "-f", str(path), "--image", "bgtest:v2"], path, capsys, "the spec says blue serves, but what Nginx serves is unknown", "--force")
    refused(["rollback", "-f", str(path)], path, capsys, f"no warm standby to roll back to: {app}-green does not exist")

    # --dry-run: the diff, nothing written.
    before = fingerprint(path)
    assert main(["deploy", "-f", str(path), "--image", "bgtest:v2", "--force", "--dry-run"]) == 0
    out, _ = capsys.readouterr()
    assert "-  image: bgtest:v1    # the release\n-  activeColor: blue\n+  image: bgtest:v2    # the release\n+  activeColor: green\n" in out
    assert fingerprint(path) == before

    preview = "  preview: {image: 'bgtest:v2', env: {FEATURE: 'on'}}\n"
    original = spec_text(app, extra=preview)
    path.write_text(original)
    refused(["promote", "-f", str(path)], path, capsys, "what Nginx serves is unknown")
    # Forced, the promotion is written: the preview block goes, and its env with it (said on stderr).
    assert main(["promote", "-f", str(path), "--force"]) == 0
    out, errs = capsys.readouterr()
    assert "spec.preview.env (FEATURE) is removed with the preview" in errs
    assert path.read_text() == original.replace("image: bgtest:v1", "image: bgtest:v2").replace("activeColor: blue", "activeColor: green").replace(preview, "")
    assert out.endswith(f"{app}: wrote {path}: green is to serve bgtest:v2\n")


def test_promote_without_a_preview_and_bad_arguments_are_refused(app: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(spec_text(app))
    refused(["promote", "-f", str(path), "--force"], path, capsys, "spec.preview is not set: nothing to promote")
    path.write_text(spec_text(app, extra="  preview: {image: 'bgtest:v1'}\n"))
    refused(["promote", "-f", str(path), "--force"], path, capsys, "spec.preview.image is the live image bgtest:v1")
    refused(["deploy", "-f", str(path), "--image", "Not An Image", "--force"], path, capsys, "spec.image")
    refused(["deploy", "-f", str(tmp_path), "--image", "bgtest:v2"], path, capsys, "is a directory")
    with pytest.raises(SystemExit) as e:
        main(["deploy", "-f", str(path)])  # --image is required
    assert e.value.code == 2
    assert "the following arguments are required: --image" in capsys.readouterr().err


def test_the_write_keeps_mode_owner_and_a_root_link_and_never_overwrites_a_concurrent_edit(arena: Path, intruder: tuple[int, int], app: str, capsys: pytest.CaptureFixture[str]) -> None:
    specs = arena / "specs"
    specs.mkdir()
    real = specs / "real.yaml"
    real.write_text(spec_text(app))
    os.chown(real, 0, intruder[1])  # root's, group-readable by another group: not writable by it
    os.chmod(real, 0o640)
    link = arena / "demo.yaml"
    os.symlink("specs/real.yaml", link)  # root made it: followed, and kept

    assert main(["deploy", "-f", str(link), "--image", "bgtest:v2", "--force"]) == 0
    capsys.readouterr()
    assert os.readlink(link) == "specs/real.yaml"
    st = os.stat(real)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, intruder[1])
    assert "  image: bgtest:v2    # the release\n  activeColor: green\n" in real.read_text()
    assert sorted(p.name for p in specs.iterdir()) == ["real.yaml"]

    # The file changed after it was read (an editor, a git pull): the edit is not written over it.
    theirs = real.read_bytes().replace(b"# the release", b"# edited meanwhile")
    real.write_bytes(theirs)
    with pytest.raises(SpecError, match="changed while it was being edited"):
        files.write_spec(link, b"whatever", expected=theirs.replace(b"meanwhile", b"before"))
    assert real.read_bytes() == theirs


def test_a_forced_deploy_edits_a_checkout_without_looking_at_the_host(app: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CI bumps the spec in a checkout, where no Docker daemon answers: --force (without --apply) needs none."""
    path = tmp_path / "demo.yaml"
    path.write_text(spec_text(app))
    nowhere = ["--docker-url", f"unix://{tmp_path}/no-docker.sock"]
    refused(["deploy", "-f", str(path), "--image", "bgtest:v2", *nowhere], path, capsys, "Docker daemon unreachable")
    refused(["rollback", "-f", str(path), *nowhere], path, capsys, "Docker daemon unreachable")
    original = path.read_text()
    assert main(["deploy", "-f", str(path), "--image", "bgtest:v2", "--force", *nowhere]) == 0
    assert path.read_text() == original.replace("image: bgtest:v1", "image: bgtest:v2").replace("activeColor: blue", "activeColor: green")


def test_maintenance_on_and_off_edit_the_block_and_nothing_else(app: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`reconcile maintenance on|off`: spec.maintenance is added at the end of spec, then rewritten in place; the
    message is kept unless --message gives another; the host is not looked at (maintenance is desired state)."""
    path = tmp_path / "demo.yaml"
    original = spec_text(app)
    path.write_text(original)
    assert main(["maintenance", "on", "-f", str(path), "--message", "Back at 10:00 UTC"]) == 0
    out, _ = capsys.readouterr()
    block_on = '  maintenance:\n    enabled: true\n    message: "Back at 10:00 UTC"\n'
    assert path.read_text() == original + block_on
    assert f"+{block_on.splitlines()[0]}" in out and out.endswith(f"{app}: wrote {path}: maintenance on\n")
    assert main(["maintenance", "off", "-f", str(path)]) == 0
    capsys.readouterr()
    assert path.read_text() == original + block_on.replace("true", "false")
    # A block in the middle, with a comment before it: rewritten where it is, the rest byte for byte.
    middle = "  # planned downtime\n  maintenance: {enabled: false}\n"
    path.write_text(spec_text(app, extra=middle))
    text = path.read_text()
    assert main(["maintenance", "on", "-f", str(path)]) == 0
    assert path.read_text() == text.replace("  maintenance: {enabled: false}\n", "  maintenance:\n    enabled: true\n")
    capsys.readouterr()
    refused(["maintenance", "on", "-f", str(path), "--message", "<b>soon</b>"], path, capsys, "goes into the page")
