"""Editing a spec file the way a person would: change `spec.image` and `spec.activeColor` (and drop
`spec.preview`, or set the `spec.maintenance` block), and leave every other byte as it was (comments, blank lines, indentation, quoting, key order).

Pure functions on text, for `reconcile deploy / rollback / promote` (controller/cli/release.py):

- ruamel.yaml's round-trip composer finds where each value is written (its start and end in the text); the
  new values are spliced in there, in the quoting style the old one had. Nothing is re-emitted, so a layout
  ruamel would normalise (`key:   value`, mixed indentation, CRLF) stays byte-for-byte.
- What cannot be edited that way is refused (`NotOurs`, exit 2), never guessed at: more than one document, a
  document that is not a `bluegreen/v1` `BlueGreenApp`, a `spec` written in flow style, merge keys (`<<:`) in
  it, anchors or aliases on what is edited, block scalars (`|`, `>`), a `preview` block that shares a line
  with something else.
- The result is checked twice before anyone writes it: loaded by the controller's own strict loader it must
  be the old document with exactly the intended changes, and it must validate as a spec.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from controller.kernel.errors import SpecError
from controller.spec.app import BlueGreenApp, load_yaml, parse_app

API_VERSION = "bluegreen/v1"
KIND = "BlueGreenApp"


class NotOurs(SpecError):
    """A spec file this tool must not edit (exit 2, nothing written)."""


@dataclass(frozen=True)
class Current:
    """What the spec file says now, read from its text (not validated: a field this branch does not know may be there)."""

    name: str
    image: str
    active_color: str
    preview_image: str | None  # spec.preview.image, when a preview is declared
    preview_env: tuple[str, ...]  # names in spec.preview.env
    has_preview: bool


@dataclass(frozen=True)
class Edited:
    text: str
    app: BlueGreenApp  # the edited document, validated


# --------------------------------------------------------------------------------------------- reading


def _compose(text: str, source: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        docs = list(YAML(typ="rt").compose_all(text))
    except YAMLError as e:
        raise NotOurs(f"{source}: invalid YAML: {_first_line(e)}") from None
    except RecursionError:
        raise NotOurs(f"{source}: invalid YAML: nested too deeply") from None
    docs = [d for d in docs if d is not None]
    if len(docs) != 1:
        raise NotOurs(f"{source}: holds {len(docs)} YAML documents; only a file with one BlueGreenApp can be edited")
    return docs[0]


def _first_line(e: Exception) -> str:
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark is not None else ""
    return f"{problem or str(e).strip().splitlines()[0]}{where}"


def _is_map(node: Any) -> bool:
    return type(node).__name__ == "MappingNode"


def _is_scalar(node: Any) -> bool:
    return type(node).__name__ == "ScalarNode"


def _pairs(node: Any, key: str) -> list[tuple[Any, Any]]:
    return [(k, v) for k, v in node.value if _is_scalar(k) and k.value == key]


def _child(node: Any, key: str, where: str, source: str) -> tuple[Any, Any] | None:
    found = _pairs(node, key)
    if len(found) > 1:
        raise NotOurs(f"{source}: {where}{key}: duplicate key")
    return found[0] if found else None


def _walk(node: Any) -> Iterator[Any]:
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if _is_map(n):
            stack.extend(x for pair in n.value for x in pair)
        elif isinstance(n.value, list):
            stack.extend(n.value)


def _shared(root: Any) -> set[int]:
    """Nodes reached more than once: an alias shares its node with the anchored value."""
    seen: set[int] = set()
    shared: set[int] = set()
    stack = [root]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            shared.add(id(n))
            continue
        seen.add(id(n))
        if _is_map(n):
            stack.extend(x for pair in n.value for x in pair)
        elif isinstance(n.value, list):
            stack.extend(n.value)
    return shared


class _Doc:
    """The composed document and the nodes an edit touches, after every check that makes an edit safe."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        root = _compose(text, source)
        if not _is_map(root):
            raise NotOurs(f"{source}: not a {API_VERSION} {KIND} document (not a mapping)")
        for key, want in (("apiVersion", API_VERSION), ("kind", KIND)):
            pair = _child(root, key, "", source)
            if pair is None or not _is_scalar(pair[1]) or pair[1].value != want:
                raise NotOurs(f"{source}: not a {API_VERSION} {KIND} document ({key} is not {want!r})")
        self.shared = _shared(root)
        spec = _child(root, "spec", "", source)
        if spec is None or not _is_map(spec[1]):
            raise NotOurs(f"{source}: spec: not a mapping")
        self.spec = spec[1]
        self._safe(self.spec, "spec")
        if self.spec.flow_style:
            raise NotOurs(f"{source}: spec: written in flow style ({{...}}); cannot edit it in place")
        if any(_is_scalar(k) and k.value == "<<" for k, _ in self.spec.value):
            raise NotOurs(f"{source}: spec: uses a merge key (<<); cannot edit it in place")
        meta = _child(root, "metadata", "", source)
        name = _child(meta[1], "name", "metadata.", source) if meta is not None and _is_map(meta[1]) else None
        self.name = str(name[1].value) if name is not None and _is_scalar(name[1]) else ""

    def _safe(self, node: Any, where: str) -> None:
        if getattr(node, "anchor", None) is not None or id(node) in self.shared:
            raise NotOurs(f"{self.source}: {where}: has an anchor or alias (&/*); cannot edit it in place")

    def scalar(self, key: str) -> Any:
        pair = _child(self.spec, key, "spec.", self.source)
        if pair is None:
            raise NotOurs(f"{self.source}: spec.{key}: missing")
        node = pair[1]
        self._safe(node, f"spec.{key}")
        if not _is_scalar(node) or not isinstance(node.value, str):
            raise NotOurs(f"{self.source}: spec.{key}: not a single value")
        if node.value == "" and not node.style:
            raise NotOurs(f"{self.source}: spec.{key}: empty; cannot edit it in place")
        if node.style in ("|", ">"):
            raise NotOurs(f"{self.source}: spec.{key}: a block scalar ({node.style}); cannot edit it in place")
        return node

    def preview(self) -> tuple[Any, Any] | None:
        return _child(self.spec, "preview", "spec.", self.source)


def read_current(text: str, source: str) -> Current:
    """The fields the commands need, read from the text; `NotOurs` when the file is not ours to edit."""
    doc = _Doc(text, source)
    image = doc.scalar("image").value
    color = doc.scalar("activeColor").value
    pimage: str | None = None
    penv: tuple[str, ...] = ()
    pv = doc.preview()
    if pv is not None and _is_map(pv[1]):
        img = _child(pv[1], "image", "spec.preview.", source)
        if img is not None and _is_scalar(img[1]) and isinstance(img[1].value, str) and img[1].value:
            pimage = img[1].value
        env = _child(pv[1], "env", "spec.preview.", source)
        if env is not None and _is_map(env[1]):
            penv = tuple(str(k.value) for k, _ in env[1].value)
    return Current(doc.name, image, color, pimage, penv, pv is not None)


# --------------------------------------------------------------------------------------------- editing

_PLAIN_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@+-]*(:[A-Za-z0-9._/@+-]+)*$")


def render_scalar(value: str, style: str | None) -> str:
    """`value` written in the style of the scalar it replaces; plain only where YAML reads it back as this string."""
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == '"':
        return json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    if _PLAIN_SAFE.match(value) and _plain_is_str(value):
        return value
    return json.dumps(value)


def _plain_is_str(value: str) -> bool:
    import yaml

    try:
        return bool(yaml.safe_load(f"k: {value}\n") == {"k": value})
    except yaml.YAMLError:
        return False


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _block_span(doc: _Doc, key: Any, value: Any) -> tuple[int, int]:
    """The whole lines holding `key: value` (the key alone on the start of its line, nothing but a comment
    after the value's last character), as [start, end) indexes into the text."""
    text = doc.text
    start = _line_start(text, key.start_mark.index)
    if text[start : key.start_mark.index].strip():
        raise NotOurs(f"{doc.source}: spec.{key.value}: shares its line with another value; cannot remove it in place")
    doc._safe(value, f"spec.{key.value}")
    for n in _walk(value):
        doc._safe(n, f"spec.{key.value}")
    # The last character of the value: block collections end where the next token starts (after comments),
    # so look at the leaves and flow collections only.
    leaves = [n for n in _walk(value) if _is_scalar(n) or getattr(n, "flow_style", False)] or [value]
    end = max(max(n.end_mark.index for n in leaves), key.end_mark.index)
    if end > 0 and text[end - 1] == "\n":  # a block scalar ends after its line break
        return start, end
    eol = text.find("\n", end)
    eol = len(text) if eol < 0 else eol + 1
    rest = text[end:eol].strip()
    if rest and not rest.startswith("#"):
        raise NotOurs(f"{doc.source}: spec.{key.value}: shares its last line with another value; cannot remove it in place")
    return start, eol


def edit(
    text: str, source: str, changes: Mapping[str, str], remove: tuple[str, ...] = (), blocks: Mapping[str, Mapping[str, str | bool]] | None = None
) -> Edited:
    """`text` with `spec.<key>` set to each of `changes`, each `spec.<key>` of `remove` deleted (with its block), and
    each `spec.<key>` of `blocks` set to that mapping of scalars (its block rewritten in place, or added at the end).

    Raises `NotOurs` (the file cannot be edited in place) or `SpecError` (the result is not a valid spec)."""
    doc = _Doc(text, source)
    spans: list[tuple[int, int, str]] = []
    for key, mapping in (blocks or {}).items():
        pair = _child(doc.spec, key, "spec.", source)
        if pair is not None:
            start, end = _block_span(doc, *pair)
            indent = pair[0].start_mark.column
        else:
            last_key, last_value = doc.spec.value[-1]
            start = end = _block_span(doc, last_key, last_value)[1]
            indent = last_key.start_mark.column
        pad = " " * indent
        lines = [f"{pad}{key}:\n"] + [f"{pad}  {k}: {_render_value(v)}\n" for k, v in mapping.items()]
        prefix = "" if start == 0 or text[start - 1] == "\n" else "\n"
        spans.append((start, end, prefix + "".join(lines)))
    for key, value in changes.items():
        node = doc.scalar(key)
        spans.append((node.start_mark.index, node.end_mark.index, render_scalar(value, node.style or None)))
    for key in remove:
        pair = _child(doc.spec, key, "spec.", source)
        if pair is not None:
            start, end = _block_span(doc, *pair)
            spans.append((start, end, ""))
    spans.sort()
    for (_, a_end, _), (b_start, _, _) in pairwise(spans):
        if b_start < a_end:
            raise NotOurs(f"{source}: the fields to change share their text; cannot edit it in place")
    out = text
    for start, end, new in reversed(spans):
        out = out[:start] + new + out[end:]
    return Edited(out, _verify(text, out, source, changes, remove, blocks))


def _render_value(v: str | bool) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else json.dumps(v)  # a JSON string is a YAML "..." scalar


def _verify(
    before: str, after: str, source: str, changes: Mapping[str, str], remove: tuple[str, ...],
    blocks: Mapping[str, Mapping[str, str | bool]] | None = None,
) -> BlueGreenApp:
    """Loaded by the controller's own loader, the edit must be exactly the intended change; then it must validate."""
    old = load_yaml(before, source)
    try:
        new = load_yaml(after, source)
    except SpecError as e:
        raise NotOurs(f"{source}: the edited file would not load ({e}); nothing written") from None
    want = copy.deepcopy(old)
    spec = want.get("spec") if isinstance(want, dict) else None
    if not isinstance(spec, dict):
        raise NotOurs(f"{source}: spec: not a mapping")
    spec.update(changes)
    for key in remove:
        spec.pop(key, None)
    for key, mapping in (blocks or {}).items():
        spec[key] = dict(mapping)
    if new != want:
        raise NotOurs(f"{source}: editing the text in place would change more than {', '.join([*changes, *remove, *(blocks or {})])}; nothing written")
    return parse_app(after, source)


def unified_diff(before: str, after: str, path: str) -> str:
    """A `git diff`-style unified diff (a/ b/ names, 3 lines of context); "" when nothing changes."""
    old = before.splitlines(keepends=True)
    new = after.splitlines(keepends=True)
    lines = []
    for line in difflib.unified_diff(old, new, fromfile=f"a/{path.lstrip('/')}", tofile=f"b/{path.lstrip('/')}"):
        lines.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(lines)
