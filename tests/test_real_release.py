"""`reconcile deploy / rollback / promote --apply` on a real host (issue 12 item 4): real dockerd, real nginx,
the real CLI as a subprocess, a commented spec file.

One app goes through a release cycle: deploy v2 (converges), rollback (a switch back: no container created,
and the spec is byte-for-byte the one we started from), promote a preview (a switch again). Refusals on the
way (no standby yet, a spec that Nginx does not serve yet) exit 2 and leave the file byte-identical.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.cli.main import main
from tests.support.controller_run import ROOT, Run, World, history, subprocess_env
from tests.support.nginx import NginxInstance

pytestmark = [pytest.mark.docker, pytest.mark.nginx]


@pytest.fixture
def world(docker_client: Any, test_images: dict[str, str], app_name: str, nginx: NginxInstance, tmp_path: Path, session_id: str) -> Callable[..., World]:
    def make(**spec: Any) -> World:
        return World(docker_client, app_name, nginx, tmp_path, session_id, **spec)

    return make


def release(w: World, *args: str) -> Run:
    import subprocess
    import time

    argv = [sys.executable, "-m", "controller", *args, "-f", str(w.spec_path), "--state-dir", str(w.state)]
    started = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=90, env=subprocess_env(None), cwd=str(ROOT), stdin=subprocess.DEVNULL)
    r = Run(p.args, p.returncode, p.stdout, p.stderr)
    r.elapsed = time.monotonic() - started
    return r


def commented(doc: dict[str, Any]) -> str:
    """The spec as a person keeps it: a header, comments above and beside the two fields, a blank line; {image}
    and {color} mark the two values."""
    text = yaml.safe_dump(doc, sort_keys=False)
    image, color = f"  image: {doc['spec']['image']}\n", f"  activeColor: {doc['spec']['activeColor']}\n"
    assert image in text and color in text
    text = text.replace(image, "  # bumped by `reconcile deploy` from CI\n  image: '{image}'   # the release\n")
    text = text.replace(color, "\n  activeColor: {color}  # blue | green\n")
    return "# dialogue: owned by the platform team\n" + text


def ids(w: World) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for color in ("blue", "green"):
        c = w.container(color)
        out[color] = c.id if c is not None else None
    return out


def in_process(w: World, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """A command expected to be refused: exit 2, no output, one line on stderr (returned)."""
    capsys.readouterr()
    assert main([*args, "-f", str(w.spec_path), "--state-dir", str(w.state)]) == 2
    out, errs = capsys.readouterr()
    assert out == "" and len(errs.splitlines()) == 1, (out, errs)
    return errs.rstrip("\n")


def test_deploy_rollback_promote_round_trip_a_commented_spec_and_converge(world: Callable[..., World], capsys: pytest.CaptureFixture[str]) -> None:
    w = world(healthCheck={"stableSeconds": 0.5})
    template = commented(w.doc)
    original = template.replace("{image}", "bgtest:v1").replace("{color}", "blue")
    w.spec_path.write_text(original)
    w.once()
    w.assert_serving("blue", "v1")

    # No standby yet: nothing to roll back to. (Refusals run in-process: a Python start costs seconds on a busy CI.)
    assert in_process(w, capsys, "rollback") == f"reconcile: {w.spec_path}: refused: no warm standby to roll back to: {w.app}-green does not exist"
    assert w.spec_path.read_text() == original

    # deploy --apply: the diff, the file with only the two values changed, and the --once path converges it.
    r = release(w, "deploy", "--image", "bgtest:v2", "--apply")
    assert r.returncode == 0, r.explain()
    deployed = template.replace("{image}", "bgtest:v2").replace("{color}", "green")
    assert w.spec_path.read_text() == deployed
    assert "-  image: 'bgtest:v1'   # the release\n+  image: 'bgtest:v2'   # the release\n" in r.stdout, r.stdout
    assert "-  activeColor: blue  # blue | green\n+  activeColor: green  # blue | green\n" in r.stdout, r.stdout
    assert r.stdout.endswith(f"{w.app}: converged (4 actions)\n"), r.stdout
    w.assert_serving("green", "v2")

    # A spec Nginx does not serve yet (a deploy in progress): a deploy on top of it is refused.
    in_progress = template.replace("{image}", "bgtest:v1").replace("{color}", "blue")
    w.spec_path.write_text(in_progress)
    assert in_process(w, capsys, "deploy", "--image", "bgtest:v2") == (
        f"reconcile: {w.spec_path}: refused: the spec says blue serves, but Nginx serves green "
        "(a deploy still in progress or failed? converge (reconcile --once) or roll back first, or --force)"
    )
    assert w.spec_path.read_text() == in_progress
    # A rollback to a standby made from another revision of the spec (env changed since) says it recreates it.
    changed_env = deployed.replace("  containerPort:", "  env: {EXTRA: x}\n  containerPort:")
    assert changed_env != deployed
    w.spec_path.write_text(changed_env)
    capsys.readouterr()
    assert main(["rollback", "--dry-run", "-f", str(w.spec_path), "--state-dir", str(w.state)]) == 0
    out, errs = capsys.readouterr()
    assert f"note: {w.app}-blue was made from another revision of the spec" in errs, errs
    assert "+  activeColor: blue  # blue | green\n" in out and w.spec_path.read_text() == changed_env
    w.spec_path.write_text(deployed)

    # rollback --apply: back to what blue runs, a switch only; the spec is the one we started from, byte for byte.
    before = ids(w)
    created = len([h for h in history(w.state) if h["action"] == "CreateContainer"])
    r = release(w, "rollback", "--apply")
    assert r.returncode == 0, r.explain()
    assert w.spec_path.read_text() == original
    assert r.stdout.endswith(f"{w.app}: converged (2 actions)\n"), r.stdout
    assert not [m for m in r.messages() if "note:" in m], r.explain()  # the same revision: a switch, nothing to say
    w.assert_serving("blue", "v1")
    assert ids(w) == before
    assert len([h for h in history(w.state) if h["action"] == "CreateContainer"]) == created

    # promote: the preview image becomes the release on the idle color (green runs it: a switch again), the
    # preview block goes, every other byte stays.
    preview = "  # try the next release on the idle color\n  preview:\n    image: bgtest:v2   # from CI\n"
    with_preview = original.replace("\n  activeColor:", preview + "\n  activeColor:")
    w.spec_path.write_text(with_preview)
    r = release(w, "promote", "--apply")
    assert r.returncode == 0, r.explain()
    promoted = deployed.replace("\n  activeColor:", "  # try the next release on the idle color\n\n  activeColor:")
    assert w.spec_path.read_text() == promoted
    assert r.stdout.endswith(f"{w.app}: converged (2 actions)\n"), r.stdout  # switch, marker: nothing left to do
    w.assert_serving("green", "v2")
    assert ids(w) == before
    assert len([h for h in history(w.state) if h["action"] == "CreateContainer"]) == created
