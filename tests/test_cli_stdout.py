"""A closed standard output (`reconcile --schema | head -1`) is not an internal error: exit 141, quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli import main as cli
from controller.kernel.errors import EXIT_FAIL

ROOT = Path(__file__).resolve().parent.parent
CMD = [sys.executable, "-m", "controller", "--schema"]


def test_stdout_closed_before_the_first_write_exits_141_without_a_message() -> None:
    # A real pipe whose reader is gone before the controller writes: every write fails with EPIPE.
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run(CMD, stdout=w, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60, check=False)
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (cli.EXIT_STDOUT_CLOSED, "")


def test_reader_that_stops_after_one_line() -> None:
    # As `| head -1` does; whether the output still fit in the pipe before the reader left is up to timing.
    p = subprocess.Popen(CMD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.readline() == b"{\n"
    p.stdout.close()
    stderr = p.stderr.read().decode()
    assert p.wait(timeout=60) in (0, cli.EXIT_STDOUT_CLOSED) and stderr == ""


def test_a_broken_pipe_elsewhere_is_still_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # stdout is fine (pytest's capture): a BrokenPipeError from some socket is a bug like any other.
    def broken() -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "main", broken)
    monkeypatch.delenv("BLUEGREEN_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        cli.run()
    assert e.value.code == EXIT_FAIL
    assert "internal error: BrokenPipeError" in capsys.readouterr().err
