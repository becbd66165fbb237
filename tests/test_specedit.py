"""controller/spec/edit.py: a deploy, a rollback and a promotion change `spec.image` and `spec.activeColor` (and
drop `spec.preview`) and leave every other byte of a spec file as it was; what cannot be edited that way is refused.

The property test writes the same document in many layouts (indentation, comments, blank lines, quoting, key
order, flow or block collections, CRLF) from one template, and checks the edit byte-for-byte against the
template rendered with the new values: not against the editor's own idea of the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.kernel.errors import SpecError
from controller.spec.edit import NotOurs, edit, read_current, render_scalar, unified_diff

IMAGES = ["bgtest:v1", "registry.example:5000/team/app:1.2.3", "app@sha256:" + "ab" * 32, "app", "ghcr.io/o/a:2024.1"]
STYLES = ["", "'", '"']


def quoted(value: str, style: str) -> str:
    if style == "'":
        return f"'{value}'"
    if style == '"':
        return f'"{value}"'
    return value


@dataclass(frozen=True)
class Layout:
    """One way of writing the spec; `render` fills in the two fields (and the preview block, or not)."""

    indent: int
    gap: str  # after "key:"
    image_style: str
    color_style: str
    order: tuple[str, ...]
    comments: tuple[bool, ...]  # a comment line before each key of `order`
    inline: tuple[bool, ...]  # a comment after each key's value (scalars) or after the key (blocks)
    blank: tuple[bool, ...]  # a blank line before each key
    flow_ports: bool
    flow_preview: bool
    preview_env: bool
    newline: str
    doc_start: bool
    trailing_comment: bool

    def render(self, image: str, color: str, preview: str | None) -> str:
        i = " " * self.indent
        ii = i * 2
        lines: list[str] = []
        if self.doc_start:
            lines.append("---")
        lines += ["# app spec, bumped by CI", "apiVersion: bluegreen/v1", "kind: BlueGreenApp", "metadata:", f"{i}name: demo", "spec:"]
        for n, key in enumerate(self.order):
            if self.blank[n]:
                lines.append("")
            if self.comments[n]:
                lines.append(f"{i}# about {key}: keep me")
            tail = f"  # {key} note" if self.inline[n] else ""
            if key == "image":
                lines.append(f"{i}image:{self.gap}{quoted(image, self.image_style)}{tail}")
            elif key == "activeColor":
                lines.append(f"{i}activeColor:{self.gap}{quoted(color, self.color_style)}{tail}")
            elif key == "ports":
                if self.flow_ports:
                    lines.append(f"{i}ports:{self.gap}{{blue: 18081, green: 18082}}{tail}")
                else:
                    lines += [f"{i}ports:{tail}", f"{ii}blue: 18081", f"{ii}green:   18082"]
            elif key == "env":
                lines += [f"{i}env:{tail}", f"{ii}RATIO: 1.10", f"{ii}NAME: 'x # not a comment'"]
            elif key == "nginx":
                lines += [f"{i}nginx:{tail}", f"{ii}testCommand: [/bin/true]", f"{ii}reloadCommand:", f"{ii}- /bin/true"]
            elif key == "preview" and preview is not None:
                if self.flow_preview:
                    env = ", env: {FEATURE: 'on'}" if self.preview_env else ""
                    lines.append(f"{i}preview:{self.gap}{{image: {preview}{env}}}{tail}")
                else:
                    lines += [f"{i}preview:{tail}", f"{ii}image: {preview}"]
                    if self.preview_env:
                        lines += [f"{ii}env:", f"{ii}{i}FEATURE: 'on'  # for the preview only"]
        if self.trailing_comment:
            lines.append("# end")
        return self.newline.join(lines) + self.newline


KEYS = ("image", "activeColor", "ports", "env", "nginx", "preview")


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    flags = st.lists(st.booleans(), min_size=len(KEYS), max_size=len(KEYS)).map(tuple)
    return Layout(
        indent=draw(st.sampled_from([2, 3, 4])),
        gap=draw(st.sampled_from([" ", "  ", "   "])),
        image_style=draw(st.sampled_from(STYLES)),
        color_style=draw(st.sampled_from(STYLES)),
        order=tuple(draw(st.permutations(KEYS))),
        comments=draw(flags),
        inline=draw(flags),
        blank=draw(flags),
        flow_ports=draw(st.booleans()),
        flow_preview=draw(st.booleans()),
        preview_env=draw(st.booleans()),
        newline=draw(st.sampled_from(["\n", "\r\n"])),
        doc_start=draw(st.booleans()),
        trailing_comment=draw(st.booleans()),
    )


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(layout=layouts(), old=st.sampled_from(IMAGES), new=st.sampled_from(IMAGES), color=st.sampled_from(["blue", "green"]))
def test_deploy_and_rollback_change_the_two_values_and_no_other_byte(layout: Layout, old: str, new: str, color: str) -> None:
    flipped = "green" if color == "blue" else "blue"
    before = layout.render(old, color, None)
    cur = read_current(before, "spec.yaml")
    assert (cur.name, cur.image, cur.active_color, cur.has_preview) == ("demo", old, color, False)

    out = edit(before, "spec.yaml", {"image": new, "activeColor": flipped})
    assert out.text == layout.render(new, flipped, None)
    assert (out.app.spec.image, out.app.spec.activeColor) == (new, flipped)
    assert out.app.spec.env == {"RATIO": "1.10", "NAME": "x # not a comment"}  # as written, not as a float
    # A rollback of that deploy is the same edit back: the original bytes again.
    assert edit(out.text, "spec.yaml", {"image": old, "activeColor": color}).text == before


@SETTINGS
@given(layout=layouts(), old=st.sampled_from(IMAGES), preview=st.sampled_from(IMAGES))
def test_promote_removes_exactly_the_preview_block(layout: Layout, old: str, preview: str) -> None:
    before = layout.render(old, "blue", preview)
    cur = read_current(before, "spec.yaml")
    assert cur.has_preview and cur.preview_image == preview
    assert cur.preview_env == (("FEATURE",) if layout.preview_env else ())

    out = edit(before, "spec.yaml", {"image": preview, "activeColor": "green"}, remove=("preview",))
    # The comment line above `preview:` is not part of the block: it stays, like every other line.
    assert out.text == layout.render(preview, "green", None)


BASE = """\
apiVersion: bluegreen/v1
kind: BlueGreenApp
metadata: {name: demo}
spec:
  image: app:1   # the release
  activeColor: blue
  nginx: {testCommand: [/bin/true], reloadCommand: [/bin/true]}
"""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (BASE + "---\n" + BASE, "holds 2 YAML documents"),
        ("", "holds 0 YAML documents"),
        (BASE.replace("kind: BlueGreenApp", "kind: Deployment"), "kind is not 'BlueGreenApp'"),
        (BASE.replace("bluegreen/v1", "bluegreen/v2"), "apiVersion is not 'bluegreen/v1'"),
        ("- a\n- b\n", "not a mapping"),
        (BASE.replace("spec:\n  image: app:1   # the release\n  activeColor: blue\n", "spec: {image: 'app:1', activeColor: blue,\n"
                      ).replace("reloadCommand: [/bin/true]}\n", "reloadCommand: [/bin/true]}}\n"), "flow style"),
        (BASE.replace("image: app:1 ", "image: &img app:1 "), "spec.image: has an anchor or alias"),
        ("x: &img app:1\n" + BASE.replace("image: app:1 ", "image: *img "), "spec.image: has an anchor or alias"),
        (BASE.replace("spec:\n", "spec: &s\n"), "spec: has an anchor or alias"),
        (BASE.replace("  image: app:1   # the release\n", "  image: >-\n    app:1\n"), "block scalar"),
        ("base: &b {containerPort: 8081}\n" + BASE.replace("spec:\n", "spec:\n  <<: *b\n"), "merge key"),
        (BASE.replace("activeColor: blue", "activeColor: blue\n  image: app:2"), "spec.image: duplicate key"),
        (BASE.replace("  activeColor: blue\n", ""), "spec.activeColor: missing"),
        (BASE.replace("image: app:1", "image: [app:1]"), "spec.image: not a single value"),
        ("a: [\n", "invalid YAML"),
        (BASE.replace("image: app:1   # the release", "image:"), "spec.image: empty"),
    ],
)
def test_a_file_that_is_not_ours_to_edit_is_refused(text: str, problem: str) -> None:
    with pytest.raises(NotOurs) as e:
        edit(text, "spec.yaml", {"image": "app:2", "activeColor": "green"})
    assert problem in str(e.value) and str(e.value).startswith("spec.yaml: ") and "\n" not in str(e.value)


def test_a_preview_that_shares_a_line_is_refused() -> None:
    text = BASE.replace("spec:\n", "spec:\n  preview: {image: app:2}\n").replace("  activeColor: blue\n", "").replace(
        "  preview: {image: app:2}\n", "  preview: {image: app:2}\n  activeColor: blue\n"
    )
    assert edit(text, "s", {"image": "app:2", "activeColor": "green"}, remove=("preview",)).text.count("preview") == 0
    weird = BASE.replace("metadata: {name: demo}\nspec:\n", "metadata: {name: demo}\nspec:\n  ? preview\n  : {image: app:2}\n")
    with pytest.raises(NotOurs, match="shares"):
        edit(weird, "s", {"image": "app:2", "activeColor": "green"}, remove=("preview",))


def test_an_edit_that_would_change_anything_else_is_refused() -> None:
    """The last check before a write: the edited text, loaded, is the old document with exactly these changes."""
    from controller.spec.edit import _verify

    after = BASE.replace("image: app:1", "image: app:2").replace("activeColor: blue", "activeColor: green")
    assert _verify(BASE, after, "s", {"image": "app:2", "activeColor": "green"}, ()).spec.image == "app:2"
    for extra in (after.replace("[/bin/true]}", "[/bin/true], switch: reload}"), after.replace("name: demo", "name: other")):
        with pytest.raises(NotOurs, match="would change more than image, activeColor; nothing written"):
            _verify(BASE, extra, "s", {"image": "app:2", "activeColor": "green"}, ())


def test_the_edited_document_must_validate() -> None:
    # The edit itself is fine; the value is not an image reference: the spec model says so, naming the field.
    with pytest.raises(SpecError, match=r"^s: spec\.image"):
        edit(BASE, "s", {"image": "Not An Image!", "activeColor": "green"})


def test_values_keep_their_quoting_and_are_quoted_when_plain_would_change_them() -> None:
    assert render_scalar("app:2", None) == "app:2"
    assert render_scalar("app:2", "'") == "'app:2'"
    assert render_scalar("it's", "'") == "'it''s'"
    assert render_scalar("app:2", '"') == '"app:2"'
    for tricky in ("true", "1.10", "null", "app: 2", "a #b", "-x", ""):
        assert render_scalar(tricky, None).startswith('"'), tricky


def test_unified_diff_names_the_file_like_git() -> None:
    after = edit(BASE, "s", {"image": "app:2", "activeColor": "green"}).text
    diff = unified_diff(BASE, after, "/etc/bluegreen/specs/demo.yaml")
    assert diff.startswith("--- a/etc/bluegreen/specs/demo.yaml\n+++ b/etc/bluegreen/specs/demo.yaml\n")
    assert "-  image: app:1   # the release\n-  activeColor: blue\n+  image: app:2   # the release\n+  activeColor: green\n" in diff
    assert unified_diff(BASE, BASE, "x") == ""
