"""What `reconcile export` output must satisfy (issue 20), offline: the real schemas and the checks no schema makes.

- CRD kinds (Argo Rollouts `Rollout`, `AnalysisTemplate`; external-secrets `ExternalSecret`) against the
  `openAPIV3Schema` of the CRDs vendored in tests/schemas/ (README there: releases, licences), strictly: an
  object with declared properties accepts no other (the API server would prune such a field silently).
- Core kinds (Service, Ingress, StatefulSet, Secret, and the Rollout's pod template and every job metric's Job
  spec, as a Deployment / Job) with kubernetes-validate at K8S_VERSION (its schemas ship in the package).
- Semantics: names are DNS labels and unique per kind; every Service selects a pod template's labels and its
  ports exist there; the Rollout's active and preview Services exist and differ; every AnalysisTemplate named
  exists and gets the arguments it reads; Ingress backends exist; Secrets are referenced, never inlined.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.33.0"
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
CRDS = {
    ("argoproj.io/v1alpha1", "Rollout"): "argo-rollouts-rollout-crd.yaml",
    ("argoproj.io/v1alpha1", "AnalysisTemplate"): "argo-rollouts-analysis-template-crd.yaml",
    ("external-secrets.io/v1", "ExternalSecret"): "external-secrets-externalsecret-crd.yaml",
}
CORE = {("v1", "Service"), ("v1", "Secret"), ("networking.k8s.io/v1", "Ingress"), ("apps/v1", "StatefulSet")}
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
ARG_RE = re.compile(r"\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}")

Doc = dict[str, Any]


def _strict(schema: Any) -> Any:
    """An OpenAPI schema where objects with declared properties refuse undeclared ones (kubeconform's -strict)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    crd = yaml.safe_load((SCHEMAS / CRDS[(api_version, kind)]).read_text())
    assert crd["spec"]["names"]["kind"] == kind
    version = api_version.rsplit("/", 1)[1]
    [entry] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert entry["served"], f"{api_version} {kind} is not served by the vendored CRD"
    schema = _strict(entry["schema"]["openAPIV3Schema"])
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def _core(doc: Doc, what: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return [f"{what}: {path}: {e.message}"]
    return []


def schema_problems(doc: Doc) -> list[str]:
    """The document against its schema (and the pod templates and jobs inside a CRD kind against Kubernetes')."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    what = f"{key[1]} {doc.get('metadata', {}).get('name')}"
    out: list[str] = []
    if key in CRDS:
        for err in crd_validator(*key).iter_errors(doc):
            out.append(f"{what}: {'.'.join(str(p) for p in err.absolute_path)}: {err.message}")
    elif key in CORE:
        out += _core(doc, what)
    else:
        out.append(f"{what}: no schema for {key[0]} {key[1]}")
    meta = {"name": doc.get("metadata", {}).get("name", "x")}
    if key[1] == "Rollout":  # the template is x-kubernetes-preserve-unknown-fields in the CRD: checked as a Deployment's
        spec = doc["spec"]
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                      "spec": {"selector": spec["selector"], "template": spec["template"]}}
        out += _core(deployment, f"{what} (its pod template as a Deployment's)")
    if key[1] == "AnalysisTemplate":
        for m in doc["spec"].get("metrics", []):
            job = m.get("provider", {}).get("job")
            if job is not None:
                out += _core({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job["spec"]},
                             f"{what} metric {m['name']} (its job)")
    return out


def _pod_templates(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [(f"{d['kind']} {d['metadata']['name']}", d["spec"]["template"]) for d in docs if d["kind"] in ("Rollout", "StatefulSet")]


def _container_ports(template: Doc) -> set[object]:
    ports: set[object] = set()
    for c in template["spec"]["containers"]:
        for p in c.get("ports", []):
            ports |= {p["containerPort"], *([p["name"]] if "name" in p else [])}
    return ports


def _secret_refs(value: Any) -> list[str]:
    """Every Secret a pod template or job names (envFrom.secretRef, env valueFrom.secretKeyRef, volumes)."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("secretRef", "secretKeyRef") and isinstance(v, dict):
                found.append(v["name"])
            elif k == "secret" and isinstance(v, dict) and "secretName" in v:
                found.append(v["secretName"])
            else:
                found += _secret_refs(v)
    elif isinstance(value, list):
        for v in value:
            found += _secret_refs(v)
    return found


def semantic_problems(docs: list[Doc]) -> list[str]:
    out: list[str] = []
    by_kind: dict[str, dict[str, Doc]] = {}
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        rule = DNS_1035 if kind == "Service" else DNS_1123
        if not isinstance(name, str) or not rule.match(name):
            out.append(f"{kind} {name!r}: not a valid DNS label")
        if name in by_kind.setdefault(kind, {}):
            out.append(f"{kind} {name}: exported twice")
        by_kind[kind][name] = d
    services, templates = by_kind.get("Service", {}), _pod_templates(docs)
    for name, svc in services.items():
        sel = svc["spec"].get("selector") or {}
        matched = [(w, t) for w, t in templates if sel and all(t["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if not matched:
            out.append(f"Service {name}: selector {sel} matches no pod template's labels")
        for w, t in matched:
            for p in svc["spec"].get("ports", []):
                if p.get("targetPort", p["port"]) not in _container_ports(t):
                    out.append(f"Service {name}: targetPort {p.get('targetPort')} is no container port of {w}")
    for name, ro in by_kind.get("Rollout", {}).items():
        spec = ro["spec"]
        if spec["selector"]["matchLabels"].items() - spec["template"]["metadata"]["labels"].items():
            out.append(f"Rollout {name}: selector does not match its template's labels")
        bg = spec["strategy"]["blueGreen"]
        active, preview = bg.get("activeService"), bg.get("previewService")
        for role, svc in (("activeService", active), ("previewService", preview)):
            if svc not in services:
                out.append(f"Rollout {name}: {role} {svc} is not exported")
        if active == preview:
            out.append(f"Rollout {name}: activeService and previewService are both {active}")
        for key in ("prePromotionAnalysis", "postPromotionAnalysis"):
            analysis = bg.get(key)
            if analysis is None:
                continue
            given = {a["name"] for a in analysis.get("args", [])}
            for t in analysis["templates"]:
                tmpl = by_kind.get("AnalysisTemplate", {}).get(t["templateName"])
                if tmpl is None:
                    out.append(f"Rollout {name}: {key} names AnalysisTemplate {t['templateName']}, which is not exported")
                    continue
                declared = {a["name"] for a in tmpl["spec"].get("args", [])}
                needed = {a["name"] for a in tmpl["spec"].get("args", []) if "value" not in a and "valueFrom" not in a}
                used = set(ARG_RE.findall(yaml.safe_dump(tmpl["spec"].get("metrics", []))))
                if needed - given:
                    out.append(f"Rollout {name}: {key} does not pass {sorted(needed - given)} to {t['templateName']}")
                if used - declared:
                    out.append(f"AnalysisTemplate {t['templateName']}: reads undeclared args {sorted(used - declared)}")
    for name, sts in by_kind.get("StatefulSet", {}).items():
        headless = services.get(sts["spec"]["serviceName"])
        if headless is None or headless["spec"].get("clusterIP") != "None":
            out.append(f"StatefulSet {name}: serviceName {sts['spec']['serviceName']} is no exported headless Service")
        claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}
        for c in sts["spec"]["template"]["spec"]["containers"]:
            for m in c.get("volumeMounts", []):
                if m["name"] not in claims:
                    out.append(f"StatefulSet {name}: volumeMount {m['name']} has no claim template")
    for name, ing in by_kind.get("Ingress", {}).items():
        notes = ing["metadata"].get("annotations", {})
        if notes.get("nginx.ingress.kubernetes.io/canary") != "true" and notes.get("nginx.ingress.kubernetes.io/auth-type") != "basic":
            out.append(f"Ingress {name}: no Basic Auth (the site of nginx/ has it)")
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                target = services.get(backend["name"])
                port = backend["port"].get("name", backend["port"].get("number"))
                if target is None:
                    out.append(f"Ingress {name}: backend Service {backend['name']} is not exported")
                elif port not in {x for p in target["spec"].get("ports", []) for x in (p["port"], p.get("name"))}:
                    out.append(f"Ingress {name}: Service {backend['name']} has no port {port}")
    # Secrets: referenced, never inlined. A Secret is named by an ExternalSecret's target (or, for Basic Auth,
    # an ingress-nginx annotation the operator fills); no exported document carries secret data.
    for name, sec in by_kind.get("Secret", {}).items():
        if sec.get("data") or sec.get("stringData"):
            out.append(f"Secret {name}: inlines secret data")
    targets = {es["spec"]["target"]["name"] for es in by_kind.get("ExternalSecret", {}).values()}
    for d in docs:
        for ref in _secret_refs(d.get("spec")):
            if ref not in targets:
                out.append(f"{d['kind']} {d['metadata']['name']}: references Secret {ref}, which no ExternalSecret makes")
    return out


def problems(docs: list[Doc]) -> list[str]:
    """Every schema and semantic problem of one export (empty: it passes)."""
    out = [p for d in docs for p in schema_problems(copy.deepcopy(d))]
    return out + semantic_problems(docs)
