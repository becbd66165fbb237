"""The spec-directory policy shared by --once and --watch: problems and conflicts as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.kernel.errors import SpecError
from controller.spec.app import BlueGreenApp
from controller.spec.directory import Conflict, conflicts, select
from tests.factories import app_doc, make_app, write_spec


def _write(d: Path, name: str, **spec: object) -> Path:
    return write_spec(d / f"{name}.yaml", app_doc(name, **spec))


def test_conflicts_are_data_naming_both_apps_and_the_resource() -> None:
    a = make_app("a", ports={"blue": 18001, "green": 18002})
    b = make_app("b", ports={"blue": 18002, "green": 18003})
    assert conflicts([a, b]) == [Conflict(("a", "b"), "port 127.0.0.1:18002")]
    assert str(conflicts([a, b])[0]) == "apps a and b both use port 127.0.0.1:18002"


def test_a_file_written_in_two_roles_by_two_apps_is_a_conflict() -> None:
    # b's marker is a's flag file: writing b's marker would switch a's traffic.
    a = make_app("a", ports={"blue": 18001, "green": 18002})
    b = make_app("b", ports={"blue": 18011, "green": 18012}, marker=str(a.flag_file))
    (found,) = conflicts([a, b])
    assert found.apps == ("a", "b")
    assert found.resource == f"marker {a.flag_file} (flagFile {a.flag_file} of a)"


def test_the_same_name_twice_is_a_conflict() -> None:
    a1 = make_app("a", ports={"blue": 18001, "green": 18002})
    a2 = make_app("a", ports={"blue": 18011, "green": 18012}, marker="/state/a2/active", nginx={"upstreamFile": "/n/a2.conf"})
    assert [c.resource for c in conflicts([a1, a2])] == ["name a"]


def test_once_refuses_both_sides_of_a_conflict_and_keeps_the_rest(tmp_path: Path) -> None:
    _write(tmp_path, "a", ports={"blue": 18001, "green": 18002})
    _write(tmp_path, "b", ports={"blue": 18002, "green": 18003})
    _write(tmp_path, "c", ports={"blue": 18021, "green": 18022})
    (tmp_path / "broken.yaml").write_text("spec: [", encoding="utf-8")
    sel = select(tmp_path)
    assert [a.name for a in sel.apps] == ["c"]
    assert sorted(sel.rejected) == ["a", "b", "broken"]
    conflict = [p for p in sel.problems if p.conflict is not None]
    assert {p.app for p in conflict} == {"a", "b"}
    assert all(p.conflict == Conflict(("a", "b"), "port 127.0.0.1:18002") for p in conflict)
    (invalid,) = [p for p in sel.problems if p.conflict is None]
    assert invalid.file == tmp_path / "broken.yaml" and "invalid YAML" in invalid.message


def test_watch_refuses_the_edit_that_caused_a_conflict_and_keeps_the_last_valid_spec(tmp_path: Path) -> None:
    fa = _write(tmp_path, "a", ports={"blue": 18001, "green": 18002})
    fb = _write(tmp_path, "b", ports={"blue": 18011, "green": 18012})
    first = select(tmp_path)
    assert not first.problems
    _write(tmp_path, "b", ports={"blue": 18002, "green": 18012})  # b's edit takes a's port
    second = select(tmp_path, first.apps_by_file)
    assert second.apps_by_file == first.apps_by_file  # a untouched, b's last valid spec in force
    (problem,) = second.problems
    assert (problem.file, problem.app) == (fb, "b")
    assert problem.conflict == Conflict(("a", "b"), "port 127.0.0.1:18002")
    assert fa not in {p.file for p in second.problems}


def test_watch_keeps_the_last_valid_spec_of_a_file_that_became_invalid(tmp_path: Path) -> None:
    fa = _write(tmp_path, "a")
    first = select(tmp_path)
    fa.write_text("apiVersion: bluegreen/v1\nkind: BlueGreenApp\nmetadata: {name: a}\nspec: {image: 'BAD IMAGE'}\n")
    second = select(tmp_path, first.apps_by_file)
    assert second.apps_by_file == first.apps_by_file
    (problem,) = second.problems
    assert problem.app == "a" and str(fa) in problem.message
    # --once has nothing in force: the same file is simply not reconciled.
    assert select(tmp_path).apps == []


def test_a_deeply_nested_document_is_that_files_problem_only(tmp_path: Path) -> None:
    _write(tmp_path, "a")
    (tmp_path / "deep.yaml").write_text("[" * 5000 + "]" * 5000, encoding="utf-8")
    sel = select(tmp_path)
    assert [a.name for a in sel.apps] == ["a"]
    (problem,) = sel.problems
    assert problem.file == tmp_path / "deep.yaml"
    assert "\n" not in problem.message


def test_a_missing_path_is_an_error_of_its_own(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file or directory"):
        select(tmp_path / "nope")


def test_apps_are_models_not_strings(tmp_path: Path) -> None:
    _write(tmp_path, "a")
    (app,) = select(tmp_path).apps
    assert isinstance(app, BlueGreenApp)


def test_a_file_the_app_writes_may_not_lie_in_the_state_dir(tmp_path: Path) -> None:
    # A marker at <state-dir>/lock would overwrite the controller's own lock.
    state = tmp_path / "state"
    specs = tmp_path / "specs"
    specs.mkdir()
    _write(specs, "a", marker=str(state / "lock"))
    _write(specs, "b", ports={"blue": 18031, "green": 18032})
    sel = select(specs, state_dir=state)
    assert [a.name for a in sel.apps] == ["b"]
    (problem,) = sel.problems
    assert problem.app == "a" and f"spec.marker: {state / 'lock'} is one of the controller's own files" in problem.message
    assert [a.name for a in select(specs).apps] == ["a", "b"]  # without a state dir to protect: both load
    # The documented layout, a marker beside the controller's files (<state-dir>/<app>/active), is fine.
    _write(specs, "a", marker=str(state / "a" / "active"))
    assert [a.name for a in select(specs, state_dir=state).apps] == ["a", "b"]
    _write(specs, "a", marker=str(state / "apps" / "a" / "status.json"))
    assert [a.name for a in select(specs, state_dir=state).apps] == ["b"]


def test_a_huge_spec_file_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    _write(tmp_path, "a")
    (tmp_path / "huge.yaml").write_text("# " + "x" * (1024 * 1024) + "\n", encoding="utf-8")
    sel = select(tmp_path)
    assert [a.name for a in sel.apps] == ["a"]
    (problem,) = sel.problems
    assert problem.message.startswith(f"{tmp_path / 'huge.yaml'}: cannot read: ") and "a spec is at most 1048576 bytes" in problem.message
