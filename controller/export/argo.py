"""The mapping of docs/export.md, as code (pure): one `BlueGreenApp` or `Accessory` in, its documents out.

An app becomes an Argo Rollouts `Rollout` (strategy blueGreen) with an active and a preview `Service`, an
ingress-nginx `Ingress` (Basic Auth, the htpasswd as a Secret reference), `AnalysisTemplate`s for the deploy
gates and the post-switch verification, an `ExternalSecret` for `secrets.ssm`, and a canary `Ingress` for
`preview`. An accessory becomes a `StatefulSet` with `volumeClaimTemplates` and a headless `Service` named after
it (the app keeps reaching `redis:6379`). Every approximation is a `Note` (one warning line); a field that
cannot be expressed at all raises `CannotExpress` (exit 2). No secret value is ever read or written: secrets
are referenced by name (ExternalSecret, envFrom, the Basic Auth Secret).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from controller.kernel.errors import InvalidInput
from controller.spec.accessory import Accessory, AccessoryHealthCheck
from controller.spec.app import BeforeSwitchCheck, BlueGreenApp, HookSpec, SecretsSpec, VerifySpec

Doc = dict[str, Any]

ROLLOUTS_API = "argoproj.io/v1alpha1"
EXTERNAL_SECRETS_API = "external-secrets.io/v1"
INGRESS_CLASS = "nginx"
INGRESS_NGINX = "nginx.ingress.kubernetes.io/"
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
BUSYBOX = "busybox:1.36"  # the init containers of dependsOn and the body checks: sh, nc, wget, grep
KEEP_SECONDS = 86_400  # standby: keep has no "for ever" in Argo: the previous ReplicaSet stays a day
VOLUME_SIZE = "1Gi"  # a Docker volume has no size; a claim needs one
PREVIEW_HEADER, PREVIEW_COOKIE = "X-Bluegreen-Preview", "bluegreen_preview"
DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
VERIFY_STEP_MAX = 30  # seconds between two post-switch measurements (each over the step before it)
EXEC_PROBE_TIMEOUT_MAX = 5.0  # the controller gives an accessory's health command at most 5 s per try

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # RFC 1123 label: most object names
SERVICE_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # RFC 1035 label: Service names
_QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class CannotExpress(InvalidInput):
    """The spec uses something Kubernetes + Argo Rollouts cannot express at all (exit 2, one line)."""


@dataclass(frozen=True)
class Note:
    """One approximated field of one spec: printed as one warning line."""

    field: str  # the spec field, e.g. "spec.secrets.ssm"
    message: str


@dataclass(frozen=True)
class Exported:
    """One spec's documents, in a stable order, and what was approximated."""

    kind: str  # "BlueGreenApp" | "Accessory"
    name: str
    generation: str  # the spec's revision hash (BlueGreenApp.generation / Accessory.generation)
    documents: tuple[Doc, ...]
    notes: tuple[Note, ...]
    comments: tuple[tuple[str, str], ...] = ()  # (kind, note): said above the spec's documents of that kind


@dataclass(frozen=True)
class Options:
    namespace: str | None = None
    prometheus_url: str = DEFAULT_PROMETHEUS  # where the ingress-nginx metrics are, for spec.verify


class _Notes:
    def __init__(self) -> None:
        self.items: list[Note] = []

    def add(self, field: str, message: str) -> None:
        self.items.append(Note(field, message))


# Small conversions ---------------------------------------------------------------------------------------


def _seconds(value: float, field: str, notes: _Notes, *, minimum: int = 1) -> int:
    """Kubernetes counts whole seconds: rounded up (never shorter than written), said when that changed it."""
    out = max(minimum, math.ceil(value))
    if out != value:
        notes.add(field, f"{value:g} s becomes {out} s (Kubernetes counts whole seconds)")
    return out


def _size(text: str) -> str:
    """`512m` (Docker, binary) as a Kubernetes quantity: `512Mi`."""
    return text[:-1] + {"k": "Ki", "m": "Mi", "g": "Gi"}[text[-1].lower()]


def _env(env: dict[str, str]) -> list[Doc]:
    return [{"name": k, "value": env[k]} for k in sorted(env)]


def _labels(name: str, component: str) -> dict[str, str]:
    return {NAME_LABEL: name, COMPONENT_LABEL: component}


def _meta(name: str, opts: Options, **extra: Any) -> Doc:
    meta: Doc = {"name": name, **{k: v for k, v in extra.items() if v}}
    if opts.namespace:
        meta["namespace"] = opts.namespace
    return meta


def _check_names(field: str, name: str) -> None:
    if not SERVICE_NAME_RE.match(name):
        raise CannotExpress(
            f"{field}: {name!r} cannot name a Kubernetes Service (a letter first, then [a-z0-9-], at most 63 characters)"
        )


def _secret_parts(owner: str, secrets: SecretsSpec, opts: Options, notes: _Notes) -> tuple[Doc, Doc]:
    """`secrets.ssm` as an ExternalSecret from AWS Parameter Store, and the envFrom entry that reads its Secret."""
    ssm = secrets.ssm
    store = "aws-parameter-store" + (f"-{ssm.region}" if ssm.region else "")
    base = ssm.path.rstrip("/") or "/"
    spec: Doc = {
        "refreshInterval": "1h",
        "secretStoreRef": {"kind": "ClusterSecretStore", "name": store},
        "target": {"name": f"{owner}-secrets", "creationPolicy": "Owner"},
    }
    if ssm.names is not None:
        spec["data"] = [
            {"secretKey": ssm.rename.get(n, n), "remoteRef": {"key": ssm.path + n}} for n in sorted(ssm.names)
        ]
    else:
        prefix = re.escape(ssm.path)
        rewrites: list[Doc] = [{"regexp": {"source": f"^{prefix}", "target": ""}}]
        rewrites += [{"regexp": {"source": f"^{re.escape(k)}$", "target": ssm.rename[k]}} for k in sorted(ssm.rename)]
        spec["dataFrom"] = [
            {
                "find": {"path": base, "name": {"regexp": f"^{prefix}[A-Za-z0-9_.-]+$"}},
                "rewrite": rewrites,
            }
        ]
    notes.add(
        "spec.secrets.ssm",
        f"an ExternalSecret reads {ssm.path} through the ClusterSecretStore {store!r}, which the cluster must provide "
        "(AWS credentials are the store's); a rotated parameter reaches the Secret within 1h and the pods at their next rollout",
    )
    if secrets.envFile is not None:
        notes.add("spec.secrets.envFile", f"no equivalent: {secrets.envFile} is not written (the Secret {owner}-secrets holds the values)")
    es = {
        "apiVersion": EXTERNAL_SECRETS_API,
        "kind": "ExternalSecret",
        "metadata": _meta(f"{owner}-secrets", opts),
        "spec": spec,
    }
    return es, {"secretRef": {"name": f"{owner}-secrets"}}


# Apps --------------------------------------------------------------------------------------------------


def _app_container(app: BlueGreenApp, notes: _Notes, image: str, env: dict[str, str]) -> Doc:
    s = app.spec
    hc = s.healthCheck
    if not 200 <= hc.expectStatus <= 399:
        raise CannotExpress(
            f"spec.healthCheck.expectStatus: {hc.expectStatus}: a Kubernetes httpGet probe passes on 200-399 only"
        )
    if hc.expectStatus != 200:
        notes.add("spec.healthCheck.expectStatus", f"the readiness probe passes on any status 200-399, not only {hc.expectStatus}")
    if hc.path == "/actuator" or hc.path.startswith(("/actuator/", "/actuator?")):
        notes.add(
            "spec.healthCheck.path",
            f"the site of nginx/ refuses /actuator to clients and an Ingress cannot (without snippets): keep {hc.path} "
            "off the service port (e.g. management.server.port) or block /actuator at the edge",
        )
    probe: Doc = {
        "httpGet": {"path": hc.path, "port": "http"},
        "periodSeconds": _seconds(hc.intervalSeconds, "spec.healthCheck.intervalSeconds", notes),
        "timeoutSeconds": _seconds(hc.requestTimeoutSeconds, "spec.healthCheck.requestTimeoutSeconds", notes),
    }
    if s.verify is not None:
        probe["failureThreshold"] = s.verify.healthFailures
        notes.add(
            "spec.verify.healthFailures",
            f"the readiness probe's failureThreshold ({s.verify.healthFailures}): an unready pod leaves the Service, "
            "but Argo does not switch back on it",
        )
    container: Doc = {
        "name": app.name,
        "image": image,
        "ports": [{"name": "http", "containerPort": s.containerPort, "protocol": "TCP"}],
        "readinessProbe": probe,
    }
    if env:
        container["env"] = _env(env)
    if s.resources is not None:
        container["resources"] = _resources(s.resources.memory, s.resources.memoryReservation, s.resources.cpus)
        if s.resources.memoryReservation is not None:
            notes.add(
                "spec.resources.memoryReservation",
                "becomes requests.memory: a scheduling reservation, not Docker's soft limit",
            )
        if s.resources.pidsLimit is not None:
            notes.add("spec.resources.pidsLimit", "no per-pod equivalent (the kubelet's --pod-max-pids is node-wide)")
    return container


def _resources(memory: str | None, reservation: str | None, cpus: float | None) -> Doc:
    out: Doc = {}
    limits = {k: v for k, v in (("memory", memory and _size(memory)), ("cpu", cpus and f"{round(cpus * 1000)}m")) if v}
    if limits:
        out["limits"] = limits
    if reservation is not None:
        out["requests"] = {"memory": _size(reservation)}
    return out


def _wait_for(app: BlueGreenApp, accessories: dict[str, Accessory], notes: _Notes) -> list[Doc]:
    """dependsOn: an init container per accessory, waiting on its service port (a headless Service answers
    only for ready pods, so the port answers once the accessory is healthy)."""
    out: list[Doc] = []
    for dep in app.spec.dependsOn or []:
        acc = accessories.get(dep)
        port = _health_port(acc) if acc is not None else None
        if port is None and acc is not None and acc.spec.ports:
            port = min(int(p) for p in acc.spec.ports)
        if port is not None:
            script = 'until nc -z -w 2 "$HOST" "$PORT"; do echo "waiting for $HOST:$PORT"; sleep 2; done'
            env = [{"name": "HOST", "value": dep}, {"name": "PORT", "value": str(port)}]
        else:
            script = 'until nslookup "$HOST" >/dev/null 2>&1; do echo "waiting for $HOST"; sleep 2; done'
            env = [{"name": "HOST", "value": dep}]
            notes.add(f"spec.dependsOn[{dep}]", f"{dep} has no known port: the init container waits for its DNS name only")
        out.append({"name": f"wait-{dep}"[:63], "image": BUSYBOX, "command": ["sh", "-c", script], "env": env})
    return out


def _annotation_keys(labels: dict[str, str]) -> None:
    for key in labels:
        prefix, _, name = key.rpartition("/")
        if not _QUALIFIED_NAME_RE.match(name) or (prefix and (len(prefix) > 253 or not _SUBDOMAIN_RE.match(prefix))):
            raise CannotExpress(f"spec.labels: {key!r} is not a Kubernetes annotation key ([prefix/]name, name [A-Za-z0-9-_.] up to 63)")


def _check_metric(app: BlueGreenApp, n: int, check: BeforeSwitchCheck, notes: _Notes) -> Doc:
    field = f"spec.checks.beforeSwitch[{n}]"
    if check.command is not None or check.http is None:
        raise CannotExpress(
            f"{field}.command: {check.command[0] if check.command else ''!r} is a program on the host, and a cluster has "
            "no host to run it on: make it an http check, or a hook (a container of the image)"
        )
    http = check.http
    if not 200 <= http.expectStatus <= 299:
        raise CannotExpress(f"{field}.http.expectStatus: {http.expectStatus}: an Argo web metric fails on any status outside 2xx")
    if http.expectStatus != 200:
        notes.add(f"{field}.http.expectStatus", f"any 2xx passes, not only {http.expectStatus}")
    url = f"http://{app.name}-preview.{{{{args.namespace}}}}.svc.cluster.local:{app.spec.containerPort}{http.path}"
    timeout = _seconds(check.timeoutSeconds, f"{field}.timeoutSeconds", notes)
    metric: Doc = {"name": f"check-{n}", "consecutiveErrorLimit": 0}
    if http.bodyContains is None:
        metric["provider"] = {"web": {"url": url, "timeoutSeconds": timeout}}
        return metric
    # A web metric reads a body as JSON or not at all: a substring is checked by a busybox job instead.
    script = 'wget -q -T "$TIMEOUT" -O - "$URL" | grep -qF -- "$TEXT"'
    env = {"URL": url, "TEXT": http.bodyContains, "TIMEOUT": str(timeout)}
    metric["provider"] = {"job": _job(BUSYBOX, ["sh", "-c", script], _env(env), None, timeout)}
    return metric


def _job(image: str, command: list[str], env: list[Doc], env_from: Doc | None, deadline: int) -> Doc:
    container: Doc = {"name": "run", "image": image, "command": command}
    if env:
        container["env"] = env
    if env_from is not None:
        container["envFrom"] = [env_from]
    return {
        "spec": {
            "activeDeadlineSeconds": deadline,
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        }
    }


def _hook_metric(name: str, hook: HookSpec, field: str, app: BlueGreenApp, env_from: Doc | None, notes: _Notes) -> Doc:
    deadline = _seconds(hook.timeoutSeconds, f"{field}.timeoutSeconds", notes)
    return {"name": name, "provider": {"job": _job("{{args.image}}", list(hook.command), _env(app.spec.env), env_from, deadline)}}


def _verify_metrics(app: BlueGreenApp, verify: VerifySpec, opts: Options, notes: _Notes) -> tuple[list[Doc], bool]:
    """spec.verify as Prometheus metrics over ingress-nginx's request metrics of the active Service; whether
    the revision argument (the Latest pod template hash) is needed."""
    step = min(VERIFY_STEP_MAX, math.ceil(verify.windowSeconds))
    count = max(1, math.ceil(verify.windowSeconds / step))
    timing = {"initialDelay": f"{step}s", "interval": f"{step}s", "count": count}
    sel = f'namespace="{{{{args.namespace}}}}",service="{app.name}"'
    total = f"sum(increase(nginx_ingress_controller_requests{{{sel}}}[{step}s]))"
    errors = f'sum(increase(nginx_ingress_controller_requests{{{sel},status=~"5.."}}[{step}s]))'
    address = verify.prometheus.url if verify.prometheus is not None else opts.prometheus_url
    metrics: list[Doc] = [
        {
            "name": "error-rate",
            **timing,
            "successCondition": f"len(result) == 0 || isNaN(result[0]) || result[0] <= {verify.maxErrorRate:g}",
            "provider": {"prometheus": {"address": address, "query": f"{errors} / {total} and on() {total} >= {verify.minRequests}"}},
        }
    ]
    notes.add(
        "spec.verify.maxErrorRate",
        f"judged every {step} s for {count * step} s from ingress-nginx's request metrics of Service {app.name} "
        f"(Prometheus {address}), not from the access log",
    )
    notes.add("spec.verify.minRequests", f"applied to each {step} s measurement, not to the whole window")
    if verify.maxLatencyP99Ms is not None:
        buckets = f"nginx_ingress_controller_request_duration_seconds_bucket{{{sel}}}"
        metrics.append(
            {
                "name": "latency-p99",
                **timing,
                "successCondition": f"len(result) == 0 || isNaN(result[0]) || result[0] <= {verify.maxLatencyP99Ms:g}",
                "provider": {
                    "prometheus": {
                        "address": address,
                        "query": f"histogram_quantile(0.99, sum by (le) (rate({buckets}[{step}s]))) * 1000",
                    }
                },
            }
        )
        notes.add("spec.verify.maxLatencyP99Ms", "the p99 of ingress-nginx's request duration histogram (its buckets), not of upstream times")
    if verify.accessLog is not None:
        notes.add("spec.verify.accessLog", "no equivalent: the judgement uses ingress-nginx's metrics")
    revision = False
    pm = verify.prometheus
    if pm is not None:
        if "{color}" in pm.query:
            raise CannotExpress("spec.verify.prometheus.query: {color}: a Rollout has no colors (use {revision}: the pod template hash)")
        if "{{" in pm.query:
            raise CannotExpress("spec.verify.prometheus.query: '{{' would be read as an Argo template argument")
        revision = "{revision}" in pm.query
        query = pm.query.replace("{app}", app.name).replace("{revision}", "{{args.revision}}")
        metrics.append(
            {
                "name": "prometheus",
                **timing,
                "successCondition": f"len(result) != 1 || isNaN(result[0]) || result[0] <= {pm.max:g}",
                "provider": {"prometheus": {"address": pm.url, "query": query}},
            }
        )
        notes.add(
            "spec.verify.prometheus.query",
            f"asked every {step} s; the answer must be a one-sample vector (Argo reads result[0]: a scalar answer is an "
            "analysis error)" + ("; {revision} is the new ReplicaSet's pod template hash" if revision else ""),
        )
    return metrics, revision


def _analysis(name: str, args: list[Doc], metrics: list[Doc], opts: Options, dry_run: list[str]) -> Doc:
    spec: Doc = {"args": [{"name": a["name"]} for a in args], "metrics": metrics}
    if dry_run:
        spec["dryRun"] = [{"metricName": m} for m in dry_run]
    return {"apiVersion": ROLLOUTS_API, "kind": "AnalysisTemplate", "metadata": _meta(name, opts), "spec": spec}


def export_app(app: BlueGreenApp, accessories: dict[str, Accessory], opts: Options) -> Exported:
    """One BlueGreenApp as Rollout, Services, Ingress(es), AnalysisTemplates and ExternalSecret; CannotExpress."""
    s, name, notes = app.spec, app.name, _Notes()
    _check_names("metadata.name", name)
    labels = _labels(name, "app")
    secret_doc, env_from = _secret_parts(name, s.secrets, opts, notes) if s.secrets is not None else (None, None)
    image, env = s.image, dict(s.env)
    if s.preview is not None:
        image, env = s.preview.image, {**s.env, **s.preview.env}
        notes.add(
            "spec.preview",
            f"the Rollout's template is the preview release {s.preview.image}, paused before promotion (kubectl argo "
            "rollouts promote = reconcile promote; on a cluster without this Rollout, apply it without preview first, or "
            f"the preview goes live); the canary Ingress takes {PREVIEW_HEADER}: 1 as before, but the cookie only as "
            f"{PREVIEW_COOKIE}=always (ingress-nginx's value)",
        )
    container = _app_container(app, notes, image, env)
    if env_from is not None:
        container["envFrom"] = [env_from]
    pod: Doc = {"containers": [container], "terminationGracePeriodSeconds": s.stopTimeoutSeconds}
    waits = _wait_for(app, accessories, notes)
    if waits:
        pod["initContainers"] = waits
    template: Doc = {"metadata": {"labels": labels}, "spec": pod}
    if s.labels:
        _annotation_keys(s.labels)
        template["metadata"]["annotations"] = dict(sorted(s.labels.items()))
        notes.add("spec.labels", "become pod annotations (Docker label values need not be valid Kubernetes label values)")
    if s.restartPolicy in ("no", "on-failure"):
        notes.add("spec.restartPolicy", f"{s.restartPolicy}: a Rollout's pods always restart (restartPolicy: Always)")
    if s.failover == "previous":
        notes.add(
            "spec.failover",
            "no equivalent: Argo does not move traffic back to the previous ReplicaSet when the live one fails after the "
            "rollout completed (kubectl argo rollouts undo does, by hand)",
        )

    # Deploy gates: prePromotionAnalysis (checks as web or job metrics, the hook as a job of the new image).
    namespace_arg: Doc = {"name": "namespace", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    image_arg: Doc = {"name": "image", "value": image}
    pre_metrics: list[Doc] = []
    pre_args: list[Doc] = []
    hooks, checks = s.hooks, s.checks.beforeSwitch if s.checks is not None else []
    if hooks is not None and hooks.beforeSwitch is not None:
        pre_metrics.append(_hook_metric("hook-before-switch", hooks.beforeSwitch, "spec.hooks.beforeSwitch", app, env_from, notes))
        pre_args.append(image_arg)
        notes.add(
            "spec.hooks.beforeSwitch",
            "a job metric of the new image in prePromotionAnalysis: Argo may run it again (a retried or restarted "
            "analysis), not once per revision, and beside the checks rather than before them",
        )
        if hooks.beforeSwitch.maintenance:
            notes.add(
                "spec.hooks.beforeSwitch.maintenance",
                "no equivalent: the active Service keeps serving the old release while prePromotionAnalysis runs the "
                "migration; put the site in maintenance yourself around it",
            )
    for n, check in enumerate(checks):
        pre_metrics.append(_check_metric(app, n, check, notes))
    if checks:
        pre_args.insert(0, namespace_arg)
    post_metrics: list[Doc] = []
    post_args: list[Doc] = []
    dry_run: list[str] = []
    if s.verify is not None:
        metrics, revision = _verify_metrics(app, s.verify, opts, notes)
        post_metrics += metrics
        post_args.append(namespace_arg)
        if revision:
            post_args.append({"name": "revision", "valueFrom": {"podTemplateHashValue": "Latest"}})
    if hooks is not None and hooks.afterSwitch is not None:
        post_metrics.append(_hook_metric("hook-after-switch", hooks.afterSwitch, "spec.hooks.afterSwitch", app, env_from, notes))
        post_args.append(image_arg)
        dry_run.append("hook-after-switch")
        notes.add(
            "spec.hooks.afterSwitch",
            "a dry-run job metric in postPromotionAnalysis (its failure does not abort the rollout): Argo may run it again",
        )

    blue_green: Doc = {
        "activeService": name,
        "previewService": f"{name}-preview",
        "autoPromotionEnabled": s.preview is None,
    }
    verify_span = 0
    if s.verify is not None:
        step = min(VERIFY_STEP_MAX, math.ceil(s.verify.windowSeconds))
        verify_span = step * (1 + max(1, math.ceil(s.verify.windowSeconds / step)))
    if s.standby == "keep":
        blue_green["scaleDownDelaySeconds"] = KEEP_SECONDS
        notes.add(
            "spec.standby",
            f"keep: the previous ReplicaSet stays up {KEEP_SECONDS} s after a promotion (scaleDownDelaySeconds), not for "
            "ever; a rollback within that time is a switch",
        )
    else:
        # Argo cancels a post-promotion analysis when the delay ends: never before the verification window.
        delay = max(math.ceil(s.drainSeconds), verify_span)
        blue_green["scaleDownDelaySeconds"] = delay
        notes.add(
            "spec.standby",
            f"stop: the previous ReplicaSet is scaled down {delay} s after a promotion (scaleDownDelaySeconds), "
            "not as soon as its connections end",
        )
    if s.maintenance is not None and s.maintenance.enabled:
        notes.add(
            "spec.maintenance",
            "no equivalent: ingress-nginx has no maintenance page without snippets; scale the Rollout's Ingress to a "
            "static maintenance backend yourself",
        )
    for key, suffix, metrics, args in (("prePromotionAnalysis", "pre", pre_metrics, pre_args), ("postPromotionAnalysis", "post", post_metrics, post_args)):
        if metrics:
            blue_green[key] = {"templates": [{"templateName": f"{name}-{suffix}"}], "args": args}
    rollout: Doc = {
        "apiVersion": ROLLOUTS_API,
        "kind": "Rollout",
        "metadata": _meta(name, opts, labels=labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {NAME_LABEL: name}},
            "minReadySeconds": _seconds(s.healthCheck.stableSeconds, "spec.healthCheck.stableSeconds", notes, minimum=0),
            "progressDeadlineSeconds": math.ceil(s.healthCheck.timeoutSeconds + s.healthCheck.stableSeconds),
            "progressDeadlineAbort": True,
            "template": template,
            "strategy": {"blueGreen": blue_green},
        },
    }
    port = {"name": "http", "port": s.containerPort, "targetPort": "http", "protocol": "TCP"}
    services = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(svc, opts, labels=labels),
            "spec": {"type": "ClusterIP", "selector": {NAME_LABEL: name}, "ports": [port]},
        }
        for svc in (name, f"{name}-preview")
    ]
    docs: list[Doc] = [*([secret_doc] if secret_doc is not None else []), *services, rollout]
    if pre_metrics:
        docs.append(_analysis(f"{name}-pre", pre_args, pre_metrics, opts, []))
    if post_metrics:
        docs.append(_analysis(f"{name}-post", post_args, post_metrics, opts, dry_run))
    docs.append(_ingress(name, name, opts, labels, {
        "auth-type": "basic",
        "auth-secret": f"{name}-basic-auth",
        "auth-realm": name,
        "proxy-buffering": "off",  # server-sent events stream unbuffered, as in the site of nginx/
    }))
    if s.preview is not None:
        docs.append(_ingress(f"{name}-preview", f"{name}-preview", opts, labels, {
            "canary": "true",
            "canary-by-header": PREVIEW_HEADER,
            "canary-by-header-value": "1",
            "canary-by-cookie": PREVIEW_COOKIE,
        }))
    auth = f"the Basic Auth Secret {name}-basic-auth is not exported: kubectl create secret generic {name}-basic-auth --from-file=auth=<htpasswd>"
    return Exported("BlueGreenApp", name, app.generation(), tuple(docs), tuple(notes.items), (("Ingress", auth),))


def _ingress(name: str, service: str, opts: Options, labels: dict[str, str], annotations: dict[str, str]) -> Doc:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _meta(name, opts, labels=labels, annotations={INGRESS_NGINX + k: v for k, v in annotations.items()}),
        "spec": {
            "ingressClassName": INGRESS_CLASS,
            "rules": [
                {
                    "http": {
                        "paths": [
                            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"name": "http"}}}}
                        ]
                    }
                }
            ],
        },
    }


# Accessories -------------------------------------------------------------------------------------------


def _health_port(acc: Accessory) -> int | None:
    hc = acc.spec.healthCheck
    if hc is None:
        return None
    return hc.tcp if hc.tcp is not None else hc.http.port if hc.http is not None else None


def _accessory_probe(hc: AccessoryHealthCheck, notes: _Notes) -> Doc:
    probe: Doc
    if hc.command is not None:
        probe = {"exec": {"command": list(hc.command)}}
    elif hc.tcp is not None:
        probe = {"tcpSocket": {"port": hc.tcp}}
    else:
        assert hc.http is not None
        if not 200 <= hc.http.expectStatus <= 399:
            raise CannotExpress(f"spec.healthCheck.http.expectStatus: {hc.http.expectStatus}: a Kubernetes httpGet probe passes on 200-399 only")
        if hc.http.expectStatus != 200:
            notes.add("spec.healthCheck.http.expectStatus", f"the readiness probe passes on any status 200-399, not only {hc.http.expectStatus}")
        probe = {"httpGet": {"path": hc.http.path, "port": hc.http.port}}
    probe["periodSeconds"] = _seconds(hc.intervalSeconds, "spec.healthCheck.intervalSeconds", notes)
    probe["timeoutSeconds"] = math.ceil(min(EXEC_PROBE_TIMEOUT_MAX, hc.timeoutSeconds))
    if "timeoutSeconds" in hc.model_fields_set:
        notes.add(
            "spec.healthCheck.timeoutSeconds",
            f"no equivalent: a StatefulSet waits for ready without a deadline ({hc.timeoutSeconds:g} s here); the apps' init containers wait too",
        )
    return probe


def claim_name(volume: str) -> str:
    """A Docker volume name as a claim template name (RFC 1123 label): lower case, '_' and '.' as '-'."""
    return re.sub(r"[^a-z0-9-]", "-", volume.lower()).strip("-")[:63].strip("-")


def export_accessory(acc: Accessory, opts: Options) -> Exported:
    """One Accessory as a StatefulSet (one replica, a claim per volume) and a headless Service named after it."""
    s, name, notes = acc.spec, acc.name, _Notes()
    _check_names("metadata.name", name)
    labels = _labels(name, "accessory")
    ports = sorted({int(p) for p in s.ports} | ({hp} if (hp := _health_port(acc)) is not None else set()))
    container: Doc = {"name": name, "image": s.image}
    if s.command is not None:
        container["args"] = list(s.command)  # command replaces the image's CMD, not its ENTRYPOINT
    if s.env:
        container["env"] = _env(s.env)
    secret_doc = None
    if s.secrets is not None:
        secret_doc, env_from = _secret_parts(name, s.secrets, opts, notes)
        container["envFrom"] = [env_from]
    if ports:
        container["ports"] = [{"name": f"tcp-{p}", "containerPort": p, "protocol": "TCP"} for p in ports]
    if s.healthCheck is not None:
        container["readinessProbe"] = _accessory_probe(s.healthCheck, notes)
    claims: list[Doc] = []
    mounts: list[Doc] = []
    seen: dict[str, str] = {}
    for volume in sorted(s.volumes):
        claim = claim_name(volume)
        if not DNS_LABEL_RE.match(claim) or claim in seen:
            why = f"is also {seen[claim]!r}'s" if claim in seen else "is no RFC 1123 label"
            raise CannotExpress(f"spec.volumes: {volume!r} as a claim name {claim!r} {why}: rename the volume")
        seen[claim] = volume
        mounts.append({"name": claim, "mountPath": s.volumes[volume]})
        claims.append(
            {
                "metadata": {"name": claim},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": VOLUME_SIZE}}},
            }
        )
        renamed = f" named {claim!r}" if claim != volume else ""
        notes.add(
            f"spec.volumes[{volume}]",
            f"a PersistentVolumeClaim{renamed} of {VOLUME_SIZE} (a Docker volume has no size: set yours); its data is not copied",
        )
    if mounts:
        container["volumeMounts"] = mounts
    if s.backup is not None:
        notes.add("spec.backup", "no equivalent: a StatefulSet runs nothing before it replaces a pod (back up with your storage's snapshots)")
    if s.restartPolicy in ("no", "on-failure"):
        notes.add("spec.restartPolicy", f"{s.restartPolicy}: a StatefulSet's pods always restart (restartPolicy: Always)")
    sts: Doc = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(name, opts, labels=labels),
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": {NAME_LABEL: name}},
            # update: recreate replaces the out-of-date pod; manual leaves it until someone deletes it.
            "updateStrategy": {"type": "RollingUpdate" if s.update == "recreate" else "OnDelete"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": s.stopTimeoutSeconds},
            },
        },
    }
    if claims:
        sts["spec"]["volumeClaimTemplates"] = claims
    service_spec: Doc = {"clusterIP": "None", "selector": {NAME_LABEL: name}}
    if ports:
        service_spec["ports"] = [{"name": f"tcp-{p}", "port": p, "targetPort": p, "protocol": "TCP"} for p in ports]
    service = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, opts, labels=labels), "spec": service_spec}
    docs = [*([secret_doc] if secret_doc is not None else []), service, sts]
    managed = "a managed service is usually better than a StatefulSet for a database (backups, upgrades, failover)"
    return Exported("Accessory", name, acc.generation(), tuple(docs), tuple(notes.items), (("StatefulSet", managed),))
