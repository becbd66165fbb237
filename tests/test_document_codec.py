"""The generic codec of controller/kernel/document.py against pydantic: for every document kind, random valid
values encode to what pydantic dumps, and decode back to what pydantic validates; a state file changed behind
the controller's back (its digest does not match) is validated by pydantic (invalid: absent, warned once)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from annotated_types import Interval, MaxLen
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.kernel.document import TRUE_FALSE, After, Corrupt, Document, Stored
from controller.spec.base import COLORS
from controller.store.counters import COUNTERS
from controller.store.documents import FAILOVER, STATUS
from controller.store.releases import RELEASES
from controller.store.state import HISTORY, MEMORY, SWEPT, StateStore
from controller.world.verification import WINDOW

DOCUMENTS: list[Document[Any]] = [STATUS, FAILOVER, MEMORY, HISTORY, SWEPT, WINDOW, COUNTERS, RELEASES]
TEXT = st.text(max_size=8)


def strategy(hint: Any) -> st.SearchStrategy[Any]:
    """Valid values of `hint`, from its annotations (ranges, the True/False status, both colors of a status)."""
    if typing.get_origin(hint) is Annotated:
        base, *meta = typing.get_args(hint)
        if TRUE_FALSE in meta:
            return st.booleans()
        if any(isinstance(m, After) for m in meta):  # ObservedStatus.containers: one entry for each color
            value = strategy(typing.get_args(base)[1])
            return st.fixed_dictionaries({c: value for c in COLORS})
        for m in meta:
            if isinstance(m, Interval):
                if base is int or int in typing.get_args(base):
                    ints = st.integers(min_value=m.ge, max_value=m.le)  # type: ignore[arg-type]
                    return st.one_of(st.none(), ints) if type(None) in typing.get_args(base) else ints
                floats = st.floats(min_value=m.ge, max_value=m.le, allow_nan=False)  # type: ignore[arg-type]
                return st.one_of(st.none(), floats) if type(None) in typing.get_args(base) else floats
            if isinstance(m, MaxLen):
                return st.text(max_size=m.max_length)
        return strategy(base)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy(a) for a in args))
    if origin is Literal:
        return st.sampled_from(args)
    if origin is tuple:
        return st.lists(strategy(args[0]), max_size=2).map(tuple)
    if origin is list:
        return st.lists(strategy(args[0]), max_size=2)
    if origin is dict:
        return st.dictionaries(strategy(args[0]), strategy(args[1]), max_size=2)
    if isinstance(hint, type) and issubclass(hint, Stored):
        hints = typing.get_type_hints(hint, include_extras=True)
        return st.builds(hint, **{f.name: strategy(hints[f.name]) for f in dataclasses.fields(typing.cast(Any, hint))})
    return {str: TEXT, bool: st.booleans(), int: st.integers(-(2**31), 2**31), float: st.floats(allow_nan=False, allow_infinity=False), type(None): st.none()}[hint]


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda d: d.kind.__name__)
def test_the_generic_codec_writes_and_reads_what_pydantic_does(doc: Document[Any]) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy(doc.kind))
    def check(value: Any) -> None:
        assert doc.dump(value) == doc.validated_dump(value)
        text = doc.text(value)
        assert json.dumps(doc.validated_dump(value), indent=2, sort_keys=True) + "\n" == text
        assert doc.decode_trusted(text) == doc.parse(text)

    check()


def test_a_file_changed_behind_the_controllers_back_is_validated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore(tmp_path)
    store.save_swept_at("app", 12.5)
    path = tmp_path / "apps" / "app" / "pruned.json"
    assert (path.parent / "pruned.json.sha256").exists()
    assert store.load_swept_at("app") == 12.5  # its own bytes: read back
    path.write_text('{"sweptAt": -1}\n')  # valid JSON of the right shape, out of range: only pydantic refuses it
    with pytest.raises(Corrupt):
        SWEPT.parse(path.read_text())
    assert SWEPT.decode_trusted(path.read_text()).swept_at == -1  # what trusting it would have read
    assert store.load_swept_at("app") is None  # the digest does not match: validated, refused, absent
    path.write_text('{"sweptAt": 3, "extra": 1}\n')
    assert store.load_swept_at("app") is None  # an unknown key: refused
    (path.parent / "pruned.json.sha256").write_bytes(b"\xff garbage")  # a corrupt digest is a mismatch, never an error
    path.write_text('{"sweptAt": 3}\n')
    assert store.load_swept_at("app") == 3.0
