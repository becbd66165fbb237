"""Exported documents as YAML text that diffs cleanly in git (pure): sorted keys, a stable order, no timestamp.

Every document is preceded by a comment naming the spec file it comes from, its kind, name and revision (the
spec's generation hash, and the commit with --git-url). `stream` is one multi-document YAML; `by_kind` the same
documents as one file per kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from controller.export.argo import Doc, Exported

HEADER = "# reconcile export --to argo-rollouts"  # the first line of every output: files starting with it are ours
KIND_ORDER = ("ExternalSecret", "Service", "StatefulSet", "Rollout", "AnalysisTemplate", "Ingress")
FILE_NAMES = {kind: f"{kind.lower()}.yaml" for kind in KIND_ORDER}


@dataclass(frozen=True)
class Source:
    """One spec's export and where it was read: the file as the operator names it, and the commit if any."""

    file: str
    exported: Exported
    commit: str | None = None


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True  # a value used twice (the pod labels) is written twice, never as an &anchor / *alias


def document(doc: Doc) -> str:
    text: str = yaml.dump(doc, Dumper=_Dumper, sort_keys=True, default_flow_style=False, allow_unicode=True, width=1 << 16)
    return text


def _comment(src: Source, kind: str) -> str:
    e = src.exported
    commit = f", commit {src.commit}" if src.commit else ""
    text = f"# source: {src.file} ({e.kind} {e.name}, generation {e.generation}{commit})\n"
    return text + "".join(f"# note: {note}\n" for k, note in e.comments if k == kind)


def _sorted(sources: list[Source]) -> list[tuple[Source, Doc]]:
    """Spec files in the order given (sorted by the loader), each spec's documents in KIND_ORDER, then by name."""
    out: list[tuple[Source, Doc]] = []
    for src in sources:
        docs = sorted(src.exported.documents, key=lambda d: (KIND_ORDER.index(d["kind"]), d["metadata"]["name"]))
        out += [(src, d) for d in docs]
    return out


def _text(pairs: list[tuple[Source, Doc]], origin: str) -> str:
    head = f"{HEADER}: {len(pairs)} documents from {origin}\n"
    return head + "".join(f"---\n{_comment(src, doc['kind'])}{document(doc)}" for src, doc in pairs)


def stream(sources: list[Source], origin: str) -> str:
    """Every document, one YAML stream; `origin` names what was exported (the path, or the git source)."""
    return _text(_sorted(sources), origin)


def by_kind(sources: list[Source], origin: str) -> dict[str, str]:
    """File name -> text, one file per kind that has a document (rollout.yaml, service.yaml, ...)."""
    pairs = _sorted(sources)
    return {
        FILE_NAMES[kind]: _text([p for p in pairs if p[1]["kind"] == kind], origin)
        for kind in KIND_ORDER
        if any(d["kind"] == kind for _, d in pairs)
    }
