"""scripts/setup.sh's package step in a sandbox (issue 10 item 15): private log files, no policy-rc.d left behind.

The script is sourced (it only defines functions then) and install_packages runs with fakes first on PATH:
dpkg-query says every package is missing, apt-get is a script the test controls, service/systemctl do
nothing (the real ones must never run from a test). POLICY_RC points into the sandbox.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parent.parent / "scripts" / "setup.sh"


def _sandbox(tmp_path: Path, apt_get: str) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {
        "dpkg-query": "exit 1",  # not installed
        "id": 'echo 0',  # root, as the package step requires
        "service": "exit 0",
        "systemctl": "exit 0",
        "apt-get": apt_get,
    }
    for name, body in fakes.items():
        f = bin_dir / name
        f.write_text(f"#!/bin/sh\n{body}\n")
        f.chmod(0o755)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp), "SANDBOX": str(tmp_path)}
    return env, tmp


def _script(policy: Path) -> str:
    return f'source "{SETUP}"; POLICY_RC="{policy}"; PACKAGES=(bgtest-fake-package); install_packages; echo finished'


def test_interrupted_install_removes_its_policy_file(tmp_path: Path) -> None:
    # apt-get notes whether the policy is in place, announces itself, then hangs: the run is cancelled (SIGTERM to its process group, as CI does).
    env, tmp = _sandbox(tmp_path, '[ -f "$SANDBOX/policy-rc.d" ] && touch "$SANDBOX/policy-seen"; echo "$*" >> "$SANDBOX/apt-calls"; exec sleep 30')
    policy = tmp_path / "policy-rc.d"
    p = subprocess.Popen(["bash", "-c", _script(policy)], env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "apt-calls").exists() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert (tmp_path / "policy-seen").exists(), "policy-rc.d in place while apt-get runs"
        os.killpg(p.pid, signal.SIGTERM)
        out, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
    assert p.returncode != 0 and "finished" not in out
    assert not policy.exists(), "policy-rc.d left behind after an interrupted run"
    # The log was a private mktemp file in $TMPDIR, not a fixed name.
    logs = list(tmp.iterdir())
    assert [f.name for f in logs if f.name == "bluegreen-apt.log"] == []
    assert all(f.name.startswith("bluegreen-apt.") and stat.S_IMODE(f.stat().st_mode) == 0o600 for f in logs), logs


def test_failed_install_names_its_private_log_and_keeps_a_foreign_policy_file(tmp_path: Path) -> None:
    env, tmp = _sandbox(tmp_path, 'echo "apt says no: $*"; exit 100')
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# the admin's own\nexit 101\n")
    r = subprocess.run(["bash", "-c", _script(policy)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "finished" not in r.stdout
    assert policy.read_text() == "#!/bin/sh\n# the admin's own\nexit 101\n", "not ours: never replaced or removed"
    [log] = list(tmp.iterdir())
    assert f"apt-get install failed (exit 100; log {log})" in r.stderr
    assert "apt says no: update -qq" in log.read_text() and stat.S_IMODE(log.stat().st_mode) == 0o600


def test_successful_install_leaves_nothing_behind(tmp_path: Path) -> None:
    env, tmp = _sandbox(tmp_path, 'echo "$*" >> "$SANDBOX/apt-calls"; [ -f "$SANDBOX/policy-rc.d" ] && touch "$SANDBOX/policy-seen"; exit 0')
    policy = tmp_path / "policy-rc.d"
    r = subprocess.run(["bash", "-c", _script(policy)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "finished" in r.stdout, r.stderr
    assert (tmp_path / "policy-seen").exists() and not policy.exists()
    assert list(tmp.iterdir()) == []
    calls = (tmp_path / "apt-calls").read_text().splitlines()
    assert calls[0] == "update -qq" and calls[1].endswith("bgtest-fake-package")


@pytest.mark.parametrize("name", ["bluegreen-apt.log", "bluegreen-pip.log", "bluegreen-venv.log"])
def test_no_fixed_tmp_names_remain(name: str) -> None:
    assert name not in SETUP.read_text()
    assert subprocess.run(["bash", "-n", str(SETUP)], capture_output=True, timeout=30).returncode == 0
