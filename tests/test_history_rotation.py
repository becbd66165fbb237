"""history.jsonl rotates at HISTORY_MAX_BYTES, keeping HISTORY_KEEP rotated files, as root among files that
may be hostile: a link among the rotated files is moved as a link, never followed nor written through."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from controller.kernel.errors import HostError
from controller.store.state import HISTORY_KEEP, HISTORY_MAX_BYTES, StateStore

ENTRY = 10 * 1024  # a large history line: ~100 of them fill a file


def fill(store: StateStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.append_history({"app": "a", "n": i, "message": "x" * ENTRY})


def numbers(path: Path) -> list[int]:
    return [json.loads(line)["n"] for line in path.read_text().splitlines()]


def test_history_rotates_at_the_documented_size_and_keeps_n_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    per_file = HISTORY_MAX_BYTES // (ENTRY + 40)  # lines of ~ENTRY + 40 bytes (the JSON around the message)
    fill(store, per_file * (HISTORY_KEEP + 3))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["history.jsonl", *(f"history.jsonl.{i}" for i in range(1, HISTORY_KEEP + 1))]
    for p in tmp_path.iterdir():
        assert 0 < p.stat().st_size <= HISTORY_MAX_BYTES, p
    # Oldest lines dropped, no line lost or split between the files that are kept: consecutive, newest last.
    kept = [n for name in reversed(names[1:]) for n in numbers(tmp_path / name)] + numbers(tmp_path / "history.jsonl")
    assert kept == list(range(kept[0], per_file * (HISTORY_KEEP + 3))) and kept[0] > 0
    # Reading spans the rotated files.
    recent = store.history("a", limit=per_file + 5)
    assert [e["n"] for e in recent] == kept[-(per_file + 5):]


def test_rotation_moves_links_as_links_and_never_writes_through_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for i in range(1, HISTORY_KEEP + 1):
        (state / f"history.jsonl.{i}").symlink_to(victim)
    store = StateStore(state)
    fill(store, HISTORY_MAX_BYTES // ENTRY + 2)  # at least one rotation
    assert victim.read_text() == "precious\n"
    assert (state / "history.jsonl.1").is_file() and not (state / "history.jsonl.1").is_symlink()
    assert all((state / f"history.jsonl.{i}").is_symlink() for i in range(2, HISTORY_KEEP + 1))  # moved, not followed
    assert [e["n"] for e in store.history("a", limit=3)] == list(range(HISTORY_MAX_BYTES // ENTRY - 1, HISTORY_MAX_BYTES // ENTRY + 2))

    # The live file itself as a link: refused (as before rotation existed), the target untouched.
    os.remove(state / "history.jsonl")
    (state / "history.jsonl").symlink_to(victim)
    with pytest.raises(HostError, match="symbolic link"):
        store.append_history({"app": "a"})
    assert victim.read_text() == "precious\n"
