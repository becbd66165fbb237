"""A container's process age on the boot clock (drivers/containers.process_uptime): what keeps a wall-clock step
from making a just-started color look steady (the stability rule; the contract test compares it with StartedAt on
a real container)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from controller.drivers.containers import process_uptime


def test_a_process_started_now_is_young_and_this_one_is_older() -> None:
    before = time.monotonic()
    with subprocess.Popen(["sleep", "30"]) as p:
        try:
            young = process_uptime(p.pid)
            assert young is not None and 0 <= young <= time.monotonic() - before + 0.02  # clock ticks: 10 ms
            mine = process_uptime(os.getpid())
            assert mine is not None and mine >= young
        finally:
            p.kill()


def test_a_hostile_command_name_cannot_shift_the_fields(tmp_path: Path) -> None:
    """stat(5) puts the command name in parentheses, and a name may hold ') ' and digits: parsed from the last ')'."""
    evil = tmp_path / ") R 1 1 1 99"
    evil.symlink_to("/bin/sleep")
    before = time.monotonic()
    with subprocess.Popen([str(evil), "30"]) as p:
        try:
            with open(f"/proc/{p.pid}/stat") as f:
                assert ") R 1" in f.read()
            age = process_uptime(p.pid)
            assert age is not None and 0 <= age <= time.monotonic() - before + 0.02
        finally:
            p.kill()


@pytest.mark.parametrize("pid", [None, 0, -1, True, "1", 2**22 + 12345])
def test_what_is_not_a_live_pid_is_unknown(pid: object) -> None:
    assert process_uptime(pid) is None
