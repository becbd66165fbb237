"""monitoring/ checked by the real tools.

- Prometheus: `promtool check config`, `promtool check rules`, `promtool test rules` (every alert has a
  firing and a non-firing case), and a real Prometheus that scrapes, through the real metrics-gateway
  nginx config, a real controller `Metrics().serve()` (--watch route), a real node_exporter textfile
  collector fed by per-run `Metrics().write_textfile()` (cron route), fake Spring Boot colors and a real
  nginx-prometheus-exporter on a real nginx stub_status; every dashboard query must return data there,
  every rule must evaluate without error, and BlueGreenCutoverFailed must fire on both routes.
- Alertmanager: `amtool check-config`, `amtool config routes test` per case, and a real Alertmanager
  for inhibition and delivery (Slack-compatible webhook URL read from a file).
- Grafana: provisioning files and dashboard JSON structure; every PromQL parsed by `promtool check rules`.
- Loki/promtail: no binaries in Debian 12, so structure, cross-file consistency, and the promtail
  relabel rules evaluated on sample docker/journal targets.
- Compose: `docker-compose config` (or `docker compose config`).
- nginx snippets: `nginx -t`.

A missing tool fails its test with the Debian package to install; nothing is skipped. Every process
started here listens on 127.0.0.1 only and is stopped at the end; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "monitoring"
PROM_DIR = MON / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
AM_CONFIG = MON / "alertmanager" / "alertmanager.yml"
AM_ROUTE_CASES = MON / "alertmanager" / "tests" / "routes.yml"
DASHBOARD = MON / "grafana" / "dashboards" / "bluegreen.json"
DATASOURCES = MON / "grafana" / "provisioning" / "datasources" / "datasources.yml"
DASH_PROVIDER = MON / "grafana" / "provisioning" / "dashboards" / "bluegreen.yml"
LOKI_CONFIG = MON / "loki" / "loki-config.yml"
PROMTAIL_CONFIG = MON / "promtail" / "promtail-config.yml"
COMPOSE = MON / "docker-compose.monitoring.yml"
STUB_STATUS_CONF = MON / "nginx" / "stub_status.conf"
GATEWAY_CONF = MON / "nginx" / "metrics-gateway.conf"
DOCS = ROOT / "docs" / "monitoring.md"

WATCH_JOB = "bluegreen-controller"
SEVERITIES = {"critical": "chat-critical", "warning": "chat-warning"}

# tool -> Debian package that provides it
PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-node-exporter": "prometheus-node-exporter",
    "prometheus-nginx-exporter": "prometheus-nginx-exporter",
    "nginx": "nginx",
    "docker-compose": "docker-compose",
}

# Only loopback traffic: no proxy for our own HTTP calls, none inherited by the processes we start.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}


# ----------------------------------------------------------------------------------------- helpers


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not path:
        pytest.fail(f"`{name}` not found: install the Debian package `{PACKAGES[name]}` (apt-get install -y {PACKAGES[name]})")
    return path


def run(args: list[str], *, timeout: float = 30, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env or _CLEAN_ENV, cwd=cwd, check=False)


def must(args: list[str], **kw: Any) -> str:
    p = run(args, **kw)
    assert p.returncode == 0, f"{' '.join(args)} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p.stdout


def load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 5) -> bytes:
    assert url.startswith("http://127.0.0.1:"), url
    with _OPENER.open(url, timeout=timeout) as r:
        body: bytes = r.read()
        return body


def http_json(url: str, data: Any = None, timeout: float = 5) -> Any:
    assert url.startswith("http://127.0.0.1:"), url
    req = urllib.request.Request(url)
    if data is not None:
        req.data = json.dumps(data).encode()
        req.add_header("Content-Type", "application/json")
    with _OPENER.open(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2, logs: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
            last = e
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}" + (f"\n{logs()}" if logs else ""))


class Procs:
    """Processes started by a test: all stopped (TERM, then KILL) at the end, logs kept for messages."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=kw.pop("env", _CLEAN_ENV), start_new_session=True, **kw)
        self.procs.append((name, p, log))
        return p

    def logs(self) -> str:
        parts = []
        for name, p, log in self.procs:
            text = log.read_text(errors="replace") if log.exists() else ""
            parts.append(f"--- {name} (rc={p.poll()}) ---\n{text[-3000:]}")
        return "\n".join(parts)

    def check_alive(self) -> None:
        for name, p, _ in self.procs:
            if p.poll() is not None:
                pytest.fail(f"{name} exited with {p.returncode}\n{self.logs()}")

    def stop(self) -> None:
        for _, p, _ in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for _, p, _ in reversed(self.procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)


def rules() -> list[dict[str, Any]]:
    out = []
    for f in RULE_FILES:
        for group in load_yaml(f)["groups"]:
            for r in group["rules"]:
                out.append({**r, "_file": f.name, "_group": group["name"]})
    return out


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def doc_anchors() -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", DOCS.read_text(), re.M)}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return out


def prom_targets(d: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every Prometheus query of the dashboard."""
    return [(p, t) for p in all_panels(d) for t in p.get("targets", []) if t.get("datasource", p.get("datasource", {})).get("type") == "prometheus"]


GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s", "__range_ms"}


def substitute(expr: str, app: str = "demo", color: str = "blue|green", accessory: str = ".+") -> str:
    """Grafana's variables -> concrete values, as Grafana would send them to Prometheus."""
    values = {"app": app, "color": color, "accessory": accessory, "__rate_interval": "30s", "__interval": "15s", "__range": "1m", "__range_s": "60", "__range_ms": "60000", "__interval_ms": "15000"}

    def rep(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in values, f"unknown Grafana variable ${name} in {expr}"
        return values[name]

    return re.sub(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", rep, expr)


def controller_metric_names() -> set[str]:
    """Every sample name controller/store/metrics.py can expose (counters _total, histograms _bucket/_sum/_count, ...)."""
    sys.path.insert(0, str(ROOT))
    from controller.store import metrics

    m = metrics.Metrics()
    if hasattr(metrics, "WatchMetrics"):  # the --watch loop's own metrics, on the same registry
        metrics.WatchMetrics(m.registry)
    if hasattr(metrics, "SourceMetrics"):  # the git source's (--git-url), on the same registry
        metrics.SourceMetrics(m.registry).set(url="u", ref="r", commit="c", last_fetch_ok=None, ok=True, refused=False)
    from controller.accessory import reconcile as accessory_reconcile

    accessory_reconcile.AccessoryMetrics(m.registry)  # kind: Accessory (issue 13), on the same registry
    names: set[str] = set()
    for fam in m.registry.collect():
        base = fam.name
        if fam.type == "counter":
            names |= {f"{base}_total", f"{base}_created"}
        elif fam.type == "histogram":
            names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"}
        elif fam.type == "info":
            names.add(f"{base}_info")
        else:
            names.add(base)
    return names


def promql_texts() -> list[str]:
    texts = [r["expr"] for r in rules()]
    d = dashboard()
    texts += [t["expr"] for _, t in prom_targets(d)]
    texts += [a["expr"] for a in d["annotations"]["list"] if a.get("expr")]
    texts += [v["definition"] for v in d["templating"]["list"] if v.get("type") == "query"]
    return texts


# ----------------------------------------------------------------------------------------- Prometheus: static checks


def test_promtool_check_config() -> None:
    out = must([tool("promtool"), "check", "config", str(PROM_CONFIG)])
    assert f"{len(RULE_FILES)} rule files found" in out, out


def test_promtool_check_rules() -> None:
    assert RULE_FILES, "no rule files"
    must([tool("promtool"), "check", "rules", *map(str, RULE_FILES)])


def test_promtool_unit_tests() -> None:
    assert RULE_TESTS, "no promtool unit tests"
    must([tool("promtool"), "test", "rules", *map(str, RULE_TESTS)], cwd=PROM_DIR / "tests", timeout=60)


def test_unit_tests_cover_every_rule_file_and_alert_both_ways() -> None:
    tested_files: set[str] = set()
    fires: set[str] = set()
    silent: set[str] = set()
    for f in RULE_TESTS:
        t = load_yaml(f)
        tested_files |= {(f.parent / r).resolve().name for r in t["rule_files"]}
        for case in t["tests"]:
            for a in case.get("alert_rule_test", []):
                (fires if a.get("exp_alerts") else silent).add(a["alertname"])
    names = {a["alert"] for a in alerts()}
    assert {f.name for f in RULE_FILES} <= tested_files
    assert not names - fires, f"alerts without a firing test case: {sorted(names - fires)}"
    assert not names - silent, f"alerts without a non-firing test case: {sorted(names - silent)}"
    assert not (fires | silent) - names, f"tests of unknown alerts: {sorted((fires | silent) - names)}"


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    anchors = doc_anchors()
    base = load_yaml(PROM_CONFIG)["global"]["external_labels"]["runbook_base"]
    assert base.startswith("https://") and base.endswith("docs/monitoring.md"), base
    seen = set()
    for a in alerts():
        name = a["alert"]
        assert name not in seen, f"duplicate alert {name}"
        seen.add(name)
        assert a.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity must be one of {sorted(SEVERITIES)}"
        ann = a.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert ann.get(key, "").strip(), f"{name}: annotation {key} missing"
        assert ann["runbook_url"] == "{{ $externalLabels.runbook_base }}#" + name.lower(), f"{name}: runbook_url {ann['runbook_url']}"
        assert name.lower() in anchors, f"{name}: no runbook section (heading '{name}') in docs/monitoring.md"


def test_alert_rules_and_dashboard_use_only_controller_metric_names_and_label_values() -> None:
    from controller.store import metrics as m

    known = controller_metric_names()
    allowed_values = {"result": set(m.RESULTS) | set(m.CUTOVER_RESULTS), "condition": set(m.CONDITIONS), "kind": set(m.DRIFT_KINDS), "color": set(m.COLORS)}
    for text in [*promql_texts(), DOCS.read_text()]:
        for name in re.findall(r"\bbluegreen_[a-z_]+", text):
            assert name in known, f"{name} is not exported by controller/store/metrics.py (known: {sorted(known)})"
    for text in promql_texts():
        for label, op, value in re.findall(r'\b(result|condition|kind|color)\s*(=~|=|!=|!~)\s*"([^"]*)"', text):
            for v in value.split("|"):
                if v and not v.startswith("$"):
                    assert v in allowed_values[label], f'{label}{op}"{value}": {v!r} is not a value controller/store/metrics.py uses'


def test_controller_alerts_cover_both_metric_routes() -> None:
    """Cron runs continue their counters from the state dir (controller/store/counters.py), so one expression reads both
    routes: no alert selects the controller's scrape job, and every counter alert's promtool cases feed it both
    a --watch series (job="bluegreen-controller") and a textfile one (job="node")."""
    counters = ("bluegreen_reconcile_runs_total", "bluegreen_cutovers_total", "bluegreen_health_check_failures_total", "bluegreen_drift_repairs_total", "bluegreen_verifications_total")
    fed: dict[str, set[str]] = {}
    for f in RULE_TESTS:
        for case in load_yaml(f)["tests"]:
            jobs = {j for s in case.get("input_series", []) for j in re.findall(r'job="([^"]*)"', s["series"]) if any(c in s["series"] for c in counters)}
            for t in case.get("alert_rule_test", []):
                fed.setdefault(t["alertname"], set()).update(jobs)
    for a in alerts():
        expr = a["expr"]
        if "bluegreen_" not in expr:
            continue
        jobs = set(re.findall(r'job\s*(=|!=|=~|!~)\s*"([^"]*)"', expr))
        assert not {j for j in jobs if j[1] in (WATCH_JOB, "node")}, f"{a['alert']}: must not depend on the controller's scrape job"
        if any(c in expr for c in counters):
            assert {WATCH_JOB, "node"} <= fed.get(a["alert"], set()), f"{a['alert']}: promtool cases need counter series of both routes"


def test_prometheus_scrape_jobs_and_targets() -> None:
    cfg = load_yaml(PROM_CONFIG)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert {"bluegreen-app", WATCH_JOB, "node", "nginx"} <= set(jobs)
    app_targets = load_yaml(PROM_DIR / jobs["bluegreen-app"]["file_sd_configs"][0]["files"][0])
    colors = {(g["labels"]["app"], g["labels"]["color"]) for g in app_targets}
    apps = {a for a, _ in colors}
    assert colors == {(a, c) for a in apps for c in ("blue", "green")}, "both colors of every app must be scraped"
    # The controller's own series carry `app`: a target label `app` would rename theirs to exported_app.
    for job in (WATCH_JOB, "node"):
        for f in jobs[job]["file_sd_configs"][0]["files"]:
            for g in load_yaml(PROM_DIR / f) or []:
                assert "app" not in g.get("labels", {}), f"{f}: no `app` label on the {job} job's targets"
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The checks above can fail: a rule with a PromQL error is rejected by the same command."""
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum by (app) (rate(x[5m])\n")
    assert run([tool("promtool"), "check", "rules", str(broken)]).returncode != 0


# ----------------------------------------------------------------------------------------- Alertmanager


def route_cases() -> list[tuple[dict[str, str], list[str]]]:
    cases = [(c["labels"], c["receivers"]) for c in load_yaml(AM_ROUTE_CASES)]
    for a in alerts():  # every alert reaches the receiver of its severity
        labels = {"alertname": a["alert"], "severity": a["labels"]["severity"], "app": "shop"}
        cases.append((labels, [SEVERITIES[labels["severity"]]]))
    return cases


def test_amtool_check_config() -> None:
    out = must([tool("amtool"), "check-config", str(AM_CONFIG)])
    assert "SUCCESS" in out
    assert "1 templates" in out, out


def test_amtool_routes() -> None:
    amtool = tool("amtool")
    for labels, receivers in route_cases():
        args = [amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}", f"--verify.receivers={','.join(receivers)}"]
        args += [f"{k}={v}" for k, v in labels.items()]
        p = run(args)
        assert p.returncode == 0, f"{labels} should go to {receivers}: {p.stdout}{p.stderr}"


def test_amtool_routes_detects_a_wrong_receiver() -> None:
    p = run([tool("amtool"), "config", "routes", "test", f"--config.file={AM_CONFIG}", "--verify.receivers=chat-critical", "severity=warning", "app=shop"])
    assert p.returncode != 0


def test_alertmanager_secrets_come_from_files_never_committed() -> None:
    cfg = load_yaml(AM_CONFIG)
    files = []
    for r in cfg["receivers"]:
        for kind, confs in r.items():
            if kind.endswith("_configs"):
                for c in confs:
                    assert "api_url" not in c and "url" not in c, f"{r['name']}: inline URL; use a *_file"
                    files += [v for k, v in c.items() if k.endswith("_file")]
    assert files, "no receiver reads its webhook URL from a file"
    for f in files:
        assert f.startswith("/etc/alertmanager/secrets/"), f
        local = MON / "alertmanager" / "secrets" / Path(f).name
        ignored = run(["git", "check-ignore", "-q", str(local)], cwd=ROOT).returncode == 0
        assert ignored, f"{local} must be git-ignored"
        tracked = run(["git", "ls-files", "--error-unmatch", str(local)], cwd=ROOT).returncode == 0
        assert not tracked, f"{local} is committed"


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    received: list[tuple[str, dict[str, Any]]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_alertmanager_inhibits_and_delivers(tmp_path: Path, webhook: tuple[str, list[tuple[str, dict[str, Any]]]]) -> None:
    """Real Alertmanager with the committed config; only the secret paths and the waits are changed."""
    hook_url, received = webhook
    binary = tool("prometheus-alertmanager")
    cfg = load_yaml(AM_CONFIG)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for r in cfg["receivers"]:
        for c in r.get("slack_configs", []):
            name = Path(c["api_url_file"]).name
            (secrets / name).write_text(f"{hook_url}/{r['name']}\n")  # with a newline, as `echo URL > file` writes it
            c["api_url_file"] = str(secrets / name)
    cfg["templates"] = [str(MON / "alertmanager" / t) for t in cfg["templates"]]

    def fast(route: dict[str, Any]) -> None:
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
        for r in route.get("routes", []):
            fast(r)

    fast(cfg["route"])
    conf = tmp_path / "alertmanager.yml"
    conf.write_text(yaml.safe_dump(cfg))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs = Procs(tmp_path)
    try:
        procs.start("alertmanager", [binary, f"--config.file={conf}", f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="])
        wait_for("alertmanager ready", lambda: http_get(f"{base}/-/ready"), 20, logs=procs.logs)

        def alert(name: str, severity: str, app: str) -> dict[str, Any]:
            return {
                "labels": {"alertname": name, "severity": severity, "app": app},
                "annotations": {"summary": f"{app}: {name}", "description": "test", "runbook_url": f"https://runbooks.test/monitoring.md#{name.lower()}"},
            }

        sent = [
            alert("BlueGreenAppDown", "critical", "shop"),
            alert("BlueGreenLiveColorDown", "critical", "shop"),  # inhibited by AppDown (same app)
            alert("BlueGreenNotConverged", "warning", "shop"),  # inhibited by any critical of shop
            alert("BlueGreenNotConverged", "warning", "blog"),  # not inhibited: another app
        ]
        http_json(f"{base}/api/v2/alerts", sent)

        def states() -> dict[tuple[str, str], dict[str, Any]] | None:
            got = {(a["labels"]["alertname"], a["labels"]["app"]): a["status"] for a in http_json(f"{base}/api/v2/alerts")}
            return got if len(got) == 4 else None

        def inhibited() -> dict[tuple[str, str], dict[str, Any]] | None:
            got = states()
            if got and got[("BlueGreenNotConverged", "shop")]["inhibitedBy"] and got[("BlueGreenLiveColorDown", "shop")]["inhibitedBy"]:
                return got
            return None

        got = wait_for("inhibition", inhibited, 15, logs=procs.logs)
        assert got[("BlueGreenAppDown", "shop")]["state"] == "active"
        assert got[("BlueGreenNotConverged", "blog")]["state"] == "active"
        assert got[("BlueGreenNotConverged", "shop")]["state"] == "suppressed"

        def delivered() -> bool:
            paths = {p for p, _ in received}
            return {"/chat-critical", "/chat-warning"} <= paths

        wait_for("webhook deliveries", delivered, 20, logs=procs.logs)
        time.sleep(1.5)  # a wrongly routed or uninhibited notification would arrive within a group interval
        by_path: dict[str, str] = {}
        for path, body in received:
            by_path[path] = by_path.get(path, "") + json.dumps(body)
        assert set(by_path) == {"/chat-critical", "/chat-warning"}, by_path.keys()
        assert "BlueGreenAppDown" in by_path["/chat-critical"]
        assert "#bluegreenappdown" in by_path["/chat-critical"], "the runbook link must be in the message"
        assert "BlueGreenLiveColorDown" not in by_path["/chat-critical"]
        assert "blog: BlueGreenNotConverged" in by_path["/chat-warning"]
        assert "shop: BlueGreenNotConverged" not in by_path["/chat-warning"]
    finally:
        procs.stop()


# ----------------------------------------------------------------------------------------- Grafana


def test_grafana_datasources_provisioning() -> None:
    ds = load_yaml(DATASOURCES)
    assert ds["apiVersion"] == 1
    by_uid = {d["uid"]: d for d in ds["datasources"]}
    assert len(by_uid) == len(ds["datasources"]), "duplicate datasource uid"
    assert by_uid["prometheus"]["type"] == "prometheus"
    assert by_uid["loki"]["type"] == "loki"
    assert sum(1 for d in ds["datasources"] if d.get("isDefault")) == 1
    for d in ds["datasources"]:
        assert d["access"] == "proxy" and d["url"].startswith("http://"), d
    loki_port = load_yaml(LOKI_CONFIG)["server"]["http_listen_port"]
    assert by_uid["loki"]["url"] == f"http://loki:{loki_port}"
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["prometheus"]["jsonData"]["timeInterval"] == load_yaml(PROM_CONFIG)["global"]["scrape_interval"]


def test_grafana_dashboard_provider() -> None:
    prov = load_yaml(DASH_PROVIDER)
    assert prov["apiVersion"] == 1
    (p,) = prov["providers"]
    assert p["type"] == "file"
    assert p["options"]["path"] == "/var/lib/grafana/dashboards/bluegreen"
    compose = load_yaml(COMPOSE)
    assert f"./grafana/dashboards:{p['options']['path']}:ro" in compose["services"]["grafana"]["volumes"]


def test_dashboard_structure() -> None:
    d = dashboard()
    uids = {x["uid"]: x["type"] for x in load_yaml(DATASOURCES)["datasources"]}
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"]), d["uid"]
    assert d["title"].strip()
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert "id" not in d or d["id"] is None, "a provisioned dashboard must not carry a database id"
    variables = {v["name"] for v in d["templating"]["list"]}
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            assert uids.get(v["datasource"]["uid"]) == v["datasource"]["type"], v
    ids: set[int] = set()
    cells: set[tuple[int, int]] = set()
    panels = all_panels(d)
    assert len([p for p in panels if p["type"] != "row"]) >= 10
    for p in panels:
        assert isinstance(p["id"], int) and p["id"] not in ids, f"panel id {p.get('id')} missing or duplicate"
        ids.add(p["id"])
        gp = p["gridPos"]
        assert all(isinstance(gp[k], int) for k in "hwxy") and gp["w"] > 0 and gp["h"] > 0 and gp["x"] + gp["w"] <= 24, (p["title"], gp)
        for x in range(gp["x"], gp["x"] + gp["w"]):
            for y in range(gp["y"], gp["y"] + gp["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another at {(x, y)}"
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["title"].strip()
        assert uids.get(p["datasource"]["uid"]) == p["datasource"]["type"], f"{p['title']}: datasource {p['datasource']} is not provisioned"
        assert p["targets"], f"{p['title']}: no targets"
        refs = [t["refId"] for t in p["targets"]]
        assert len(set(refs)) == len(refs), f"{p['title']}: duplicate refId"
        for t in p["targets"]:
            ds = t.get("datasource", p["datasource"])
            assert uids.get(ds["uid"]) == ds["type"], f"{p['title']}: target datasource {ds} is not provisioned"
            assert t["expr"].strip()
            for name in re.findall(r"\$\{?([A-Za-z_]\w*)", t["expr"]):
                assert name in variables or name in GRAFANA_BUILTINS, f"{p['title']}: ${name} is not a dashboard variable"


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """Every Prometheus query of the dashboard, variables substituted, as a recording rule: promtool parses it."""
    d = dashboard()
    exprs = [t["expr"] for _, t in prom_targets(d)] + [a["expr"] for a in d["annotations"]["list"] if a.get("datasource", {}).get("type") == "prometheus"]
    assert len(exprs) >= 15
    doc = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": substitute(e)} for i, e in enumerate(exprs)]}]}
    f = tmp_path / "dashboard-queries.yml"
    f.write_text(yaml.safe_dump(doc))
    must([tool("promtool"), "check", "rules", str(f)])


def test_dashboard_covers_what_was_asked() -> None:
    exprs = " ".join(t["expr"] for _, t in prom_targets(dashboard()))
    releases = [a for a in dashboard()["annotations"]["list"] if "bluegreen_release_start_timestamp_seconds" in a.get("expr", "")]
    assert len(releases) == 1 and releases[0]["useValueForTime"], releases  # each release marked when it took traffic
    for needle in ("bluegreen_accessory_up", "bluegreen_accessory_outdated", "bluegreen_accessory_blocked", "bluegreen_live_color", "bluegreen_cutovers_total", "bluegreen_reconcile_duration_seconds_bucket", "bluegreen_health_check_failures_total", "bluegreen_drift_repairs_total", "nginx_http_requests_total", 'status=~"5.."'):
        assert needle in exprs, needle


# ----------------------------------------------------------------------------------------- Loki and promtail


def relabel(labels: dict[str, str], configs: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus/promtail relabelling (replace, keep, drop, labelmap, labeldrop, labelkeep); None = dropped."""
    labels = dict(labels)
    for c in configs:
        action = c.get("action", "replace")
        regex = re.compile(f"^(?:{c.get('regex', '(.*)')})$")
        value = c.get("separator", ";").join(labels.get(s, "") for s in c.get("source_labels", []))
        replacement = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: f"\\g<{m.group(1) or m.group(2)}>", str(c.get("replacement", "$1")))
        if action == "replace":
            m = regex.match(value)
            if m:
                new = m.expand(replacement)
                if new:
                    labels[c["target_label"]] = new
                else:
                    labels.pop(c["target_label"], None)
        elif action == "keep":
            if not regex.match(value):
                return None
        elif action == "drop":
            if regex.match(value):
                return None
        elif action == "labelmap":
            for k in list(labels):
                m = regex.match(k)
                if m:
                    labels[m.expand(replacement)] = labels[k]
        elif action == "labeldrop":
            labels = {k: v for k, v in labels.items() if not regex.match(k)}
        elif action == "labelkeep":
            labels = {k: v for k, v in labels.items() if regex.match(k)}
        else:
            raise AssertionError(f"relabel action {action} not simulated")
    return {k: v for k, v in labels.items() if not k.startswith("__") or k == "__path__"}


def promtail_jobs() -> dict[str, dict[str, Any]]:
    return {j["job_name"]: j for j in load_yaml(PROMTAIL_CONFIG)["scrape_configs"]}


def test_promtail_docker_logs_labelled_by_app_and_color() -> None:
    job = promtail_jobs()["containers"]
    (sd,) = job["docker_sd_configs"]
    assert sd["host"] == "unix:///var/run/docker.sock"
    app_container = {
        "__meta_docker_container_name": "/shop-green",
        "__meta_docker_container_label_bluegreen_app": "shop",
        "__meta_docker_container_label_bluegreen_color": "green",
        "__meta_docker_container_log_stream": "stdout",
    }
    assert relabel(app_container, job["relabel_configs"]) == {"job": "containers", "container": "shop-green", "app": "shop", "color": "green", "stream": "stdout"}
    mongo = {"__meta_docker_container_name": "/mongo", "__meta_docker_container_label_com_docker_compose_service": "mongo", "__meta_docker_container_log_stream": "stderr"}
    assert relabel(mongo, job["relabel_configs"]) == {"job": "containers", "container": "mongo", "compose_service": "mongo", "stream": "stderr"}


def test_promtail_controller_journal_and_file() -> None:
    jobs = promtail_jobs()
    journal = jobs["bluegreen-controller-journal"]
    static = journal["journal"]["labels"]
    kept = relabel({**static, "__journal__systemd_unit": "bluegreen-controller.service"}, journal["relabel_configs"])
    assert kept == {"job": "bluegreen-controller", "unit": "bluegreen-controller.service"}
    assert relabel({**static, "__journal__systemd_unit": "ssh.service"}, journal["relabel_configs"]) is None
    file_job = jobs["bluegreen-controller-file"]
    assert file_job["static_configs"][0]["labels"]["job"] == "bluegreen-controller"
    assert file_job["static_configs"][0]["labels"]["__path__"].endswith(".jsonl")
    # The controller's JSON keys (controller/kernel/logs.py: event, level, timestamp, app, color, image, reconcile_id).
    line = {"event": "cutover", "level": "info", "timestamp": "2024-05-01T10:00:00.123456Z", "app": "shop", "color": "green", "image": "shop:1.2", "reconcile_id": "r-1"}
    for j in (journal, file_job):
        stages = j["pipeline_stages"]
        (json_stage,) = [s["json"] for s in stages if "json" in s]
        assert set(json_stage["expressions"].values()) == set(line), json_stage
        ts = next(s["timestamp"] for s in stages if "timestamp" in s)
        assert json_stage["expressions"][ts["source"]] == "timestamp" and ts["format"] == "RFC3339Nano"
        labels = next(s["labels"] for s in stages if "labels" in s)
        assert set(labels) == {"level", "app", "color"}, "labels must stay low-cardinality"
        meta = next(s["structured_metadata"] for s in stages if "structured_metadata" in s)
        assert set(meta) == {"reconcile_id", "image"}


def test_loki_config_and_promtail_client_agree() -> None:
    loki = load_yaml(LOKI_CONFIG)
    port = loki["server"]["http_listen_port"]
    assert loki["auth_enabled"] is False
    (schema,) = loki["schema_config"]["configs"]
    assert schema["store"] == "tsdb" and schema["schema"] == "v13" and schema["object_store"] == "filesystem"
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert loki["compactor"]["retention_enabled"] is True and loki["compactor"]["delete_request_store"] == "filesystem"
    assert loki["limits_config"]["retention_period"]
    (client,) = load_yaml(PROMTAIL_CONFIG)["clients"]
    assert client["url"] == f"http://${{LOKI_HOST}}:{port}/loki/api/v1/push"
    assert f"{port}:{port}" in load_yaml(COMPOSE)["services"]["loki"]["ports"]


def logql_selectors(text: str) -> list[dict[str, str]]:
    """The label matchers of each `{...}` stream selector (line_format's {{.x}} has none and is skipped)."""
    out = []
    for sel in re.findall(r"\{([^{}]*)\}", text):
        matchers = dict(re.findall(r'(\w+)\s*(?:=~|!~|!=|=)\s*"([^"]*)"', sel))
        if matchers:
            out.append(matchers)
    return out


def promtail_label_names_and_jobs() -> tuple[set[str], set[str]]:
    names = {"job", "host", "filename", "unit", "container", "app", "color", "compose_service", "stream", "level"}
    jobs = set()
    for j in load_yaml(PROMTAIL_CONFIG)["scrape_configs"]:
        for sc in j.get("static_configs", []):
            jobs.add(sc["labels"]["job"])
        if "journal" in j:
            jobs.add(j["journal"]["labels"]["job"])
        for rc in j.get("relabel_configs", []):
            if rc.get("target_label") == "job":
                jobs.add(rc["replacement"])
    return names, jobs


def test_logql_in_dashboard_and_docs_uses_labels_promtail_sets() -> None:
    names, jobs = promtail_label_names_and_jobs()
    loki_exprs = [t["expr"] for p in all_panels(dashboard()) for t in p.get("targets", []) if t.get("datasource", p.get("datasource", {})).get("type") == "loki"]
    assert loki_exprs, "no Loki panel"
    doc_blocks = re.findall(r"```logql\n(.*?)```", DOCS.read_text(), re.S)
    assert len(doc_blocks) >= 5, "docs/monitoring.md needs LogQL examples in ```logql blocks"
    for text in loki_exprs + doc_blocks:
        sels = logql_selectors(text)
        assert sels, f"no stream selector in {text!r}"
        for sel in sels:
            assert set(sel) <= names, f"{text!r}: labels {set(sel) - names} are not set by promtail"
            if "job" in sel:
                assert sel["job"] in jobs, f"{text!r}: job {sel['job']} is not shipped by promtail"


# ----------------------------------------------------------------------------------------- compose


def compose_cmd() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    tool("docker-compose")  # fails with the package name
    raise AssertionError("unreachable")


def test_compose_config(tmp_path: Path) -> None:
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    base = [*compose_cmd(), "--env-file", str(env_file), "-f", str(COMPOSE)]
    env = {**_CLEAN_ENV, "LOKI_HOST": "monitoring.test"}
    env.pop("HOST_NAME", None)
    resolved = yaml.safe_load(must([*base, "--profile", "monitoring-host", "--profile", "app-host", "config"], env=env, cwd=MON))
    services = resolved["services"]
    assert set(services) == {"prometheus", "alertmanager", "grafana", "loki", "promtail", "node-exporter", "nginx-exporter", "metrics-gateway"}
    monitoring_host = {"prometheus", "alertmanager", "grafana", "loki"}
    for name, svc in services.items():
        assert svc["profiles"] == (["monitoring-host"] if name in monitoring_host else ["app-host"]), name
        if name not in monitoring_host:
            assert svc["network_mode"] == "host", name
        for v in svc.get("volumes", []):
            src = v["source"] if isinstance(v, dict) else v.split(":")[0]
            if str(src).startswith(str(MON)):
                assert Path(src).exists(), f"{name}: mounted {src} does not exist"
    assert services["promtail"]["environment"]["LOKI_HOST"] == "monitoring.test"
    # Exporters stay on loopback on the app server; only the gateway is reachable from outside.
    assert "--web.listen-address=127.0.0.1:9100" in services["node-exporter"]["command"]
    assert "--web.listen-address=127.0.0.1:9113" in services["nginx-exporter"]["command"]
    assert "--nginx.scrape-uri=http://127.0.0.1:8080/stub_status" in services["nginx-exporter"]["command"]
    # LOKI_HOST is required: without it compose refuses to start.
    env.pop("LOKI_HOST")
    p = run([*base, "config"], env=env, cwd=MON)
    assert p.returncode != 0 and "LOKI_HOST" in p.stdout + p.stderr


# ----------------------------------------------------------------------------------------- nginx snippets


def nginx_conf(tmp: Path, includes: list[Path]) -> Path:
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / d).mkdir(exist_ok=True)
    user = "user root root;\n" if os.geteuid() == 0 else ""
    inc = "\n".join(f"    include {p};" for p in includes)
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\n"
        "events { worker_connections 64; }\n"
        f"http {{\n    access_log off;\n    client_body_temp_path {tmp}/body;\n    proxy_temp_path {tmp}/proxy;\n"
        f"    fastcgi_temp_path {tmp}/fastcgi;\n    uwsgi_temp_path {tmp}/uwsgi;\n    scgi_temp_path {tmp}/scgi;\n{inc}\n}}\n"
    )
    return conf


def test_nginx_snippets_pass_nginx_t(tmp_path: Path) -> None:
    conf = nginx_conf(tmp_path, [STUB_STATUS_CONF, GATEWAY_CONF])
    must([tool("nginx"), "-t", "-q", "-p", str(tmp_path), "-c", str(conf)])


# ----------------------------------------------------------------------------------------- live stack

FAKES = r'''
import os, random, sys, threading, time
sys.path.insert(0, os.environ["REPO"])
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from controller.accessory.reconcile import AccessoryMetrics
from controller.store.counters import carry_over
from controller.store.metrics import Metrics

ctrl_port, blue_port, green_port = (int(x) for x in sys.argv[1:4])
textfile, lifetime = sys.argv[4], float(sys.argv[5])
deadline = time.monotonic() + lifetime
cron_go = threading.Event()

def watch_stdin():
    for line in sys.stdin:
        if line.strip() == "cron":
            cron_go.set()
    os._exit(0)  # the test went away
threading.Thread(target=watch_stdin, daemon=True).start()

# --watch route: one long-lived Metrics, served like `reconcile --watch --metrics-port`.
m = Metrics()
for r in ("progressing", "converged", "error", "converged"):
    m.reconcile_runs.labels(app="demo", result=r).inc()
for d in (0.3, 14.0, 0.8, 0.2):
    m.reconcile_duration.labels(app="demo").observe(d)
m.cutovers.labels(app="demo", result="success").inc()
m.cutovers.labels(app="demo", result="failed").inc()
m.health_check_failures.labels(app="demo", color="blue").inc()
m.drift_repairs.labels(app="demo", kind="route").inc()
m.drift_repairs.labels(app="demo", kind="standby").inc()
m.set_live_color("demo", "green")
m.set_conditions("demo", {"Ready": True, "RollbackReady": True})
m.app_converged.labels(app="demo").set(1)
m.last_success.labels(app="demo").set(time.time())
m.last_run.set(time.time())

# Accessories (kind: Accessory) on the same registry, set as AccessoryRunner._status sets them: every blocker
# reason gets a series per accessory. redis runs and is healthy; qdrant is down (AccessoryUnhealthy).
BLOCKER_REASONS = ("AccessoryOutdated", "AccessoryNotOurs", "AccessoryUnhealthy")

def set_accessory(am, name, up, outdated, blocked_by):
    am.up.labels(accessory=name).set(up)
    am.outdated.labels(accessory=name).set(outdated)
    for reason in BLOCKER_REASONS:
        am.blocked.labels(accessory=name, reason=reason).set(1 if reason == blocked_by else 0)

acc = AccessoryMetrics(m.registry)
set_accessory(acc, "redis", 1, 0, None)
set_accessory(acc, "qdrant", 0, 0, "AccessoryUnhealthy")
m.serve(ctrl_port)

# Spring Boot colors: Micrometer's http_server_requests_seconds, served like /actuator/prometheus.
apps = {}
for color, port in (("blue", blue_port), ("green", green_port)):
    reg = CollectorRegistry()
    h = Histogram("http_server_requests_seconds", "Duration of HTTP server request handling",
                  ["exception", "method", "outcome", "status", "uri"],
                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=reg)
    start_http_server(port, addr="127.0.0.1", registry=reg)
    apps[color] = h

# cron route: `reconcile --once --metrics-textfile`, a fresh Metrics per run that continues the counters
# stored in the state dir (as controller/cli/main.py does).
def cron_run(n):
    c = Metrics()
    result = {0: "progressing", 1: "error"}.get(n, "converged")
    c.reconcile_runs.labels(app="cronapp", result=result).inc()
    c.reconcile_duration.labels(app="cronapp").observe(0.5 + n % 3)
    if n == 0:
        c.cutovers.labels(app="cronapp", result="failed").inc()
        c.health_check_failures.labels(app="cronapp", color="green").inc()
    if n == 1:
        c.drift_repairs.labels(app="cronapp", kind="container").inc()
    c.set_live_color("cronapp", "blue")
    c.set_conditions("cronapp", {"Ready": result == "converged", "Progressing": result == "progressing", "RollbackReady": True})
    c.app_converged.labels(app="cronapp").set(1 if result == "converged" else 0)
    if result == "converged":
        c.last_success.labels(app="cronapp").set(time.time())
    c.last_run.set(time.time())
    # mongo: running and healthy, but its spec changed under update: manual (blocker AccessoryOutdated).
    set_accessory(AccessoryMetrics(c.registry), "mongo", 1, 1, "AccessoryOutdated")
    carry_over(c, __import__("pathlib").Path(textfile).parent / "state")
    c.write_textfile(__import__("pathlib").Path(textfile))

print("ready", flush=True)
run_no, next_cron = 0, None
while time.monotonic() < deadline:
    m.reconcile_runs.labels(app="demo", result="converged").inc()
    m.reconcile_duration.labels(app="demo").observe(random.uniform(0.1, 2.0))
    m.last_success.labels(app="demo").set(time.time())
    m.last_run.set(time.time())
    for _ in range(40):
        apps["green"].labels("None", "GET", "SUCCESS", "200", "/api/orders").observe(random.uniform(0.01, 0.3))
    apps["green"].labels("IllegalStateException", "GET", "SERVER_ERROR", "500", "/api/orders").observe(0.05)
    for color in ("blue", "green"):
        apps[color].labels("None", "GET", "SUCCESS", "200", "/actuator/health").observe(0.002)
    if cron_go.is_set() and (next_cron is None or time.monotonic() >= next_cron):
        cron_run(run_no)
        run_no += 1
        next_cron = time.monotonic() + 3.0  # each run's file stays for several 1s scrapes
    time.sleep(0.25)
'''


class Stack:
    def __init__(self, tmp: Path, procs: Procs, prom: str, fakes: subprocess.Popen[bytes], started: float) -> None:
        self.tmp, self.procs, self.prom, self.fakes, self.started = tmp, procs, prom, fakes, started

    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        r = http_json(f"{self.prom}/api/v1/query?{q}")
        assert r["status"] == "success", r
        result: list[dict[str, Any]] = r["data"]["result"]
        return result

    def query_range(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr, "start": f"{self.started:.3f}", "end": f"{time.time():.3f}", "step": "1"})
        r = http_json(f"{self.prom}/api/v1/query_range?{q}")
        assert r["status"] == "success", r
        result: list[dict[str, Any]] = r["data"]["result"]
        return result


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Real nginx (stub_status + metrics gateway), node_exporter, nginx exporter and Prometheus, fed by fakes."""
    binaries = {n: tool(n) for n in ("prometheus", "prometheus-node-exporter", "prometheus-nginx-exporter", "nginx")}
    tmp = tmp_path_factory.mktemp("stack")
    procs = Procs(tmp)
    ports = {k: free_port() for k in ("ctrl", "blue", "green", "stub", "gateway", "node", "nginxexp", "prom")}
    textdir = tmp / "textfile"
    textdir.mkdir()
    try:
        # Fakes: controller --watch endpoint, Spring colors, cron runs writing the textfile.
        script = tmp / "fakes.py"
        script.write_text(FAKES)
        fakes = subprocess.Popen(
            [sys.executable, str(script), str(ports["ctrl"]), str(ports["blue"]), str(ports["green"]), str(textdir / "bluegreen.prom"), "120"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=(tmp / "fakes.log").open("wb"), env={**_CLEAN_ENV, "REPO": str(ROOT)}, start_new_session=True,
        )
        procs.procs.append(("fakes", fakes, tmp / "fakes.log"))
        assert fakes.stdout is not None
        line = fakes.stdout.readline()  # bounded: the fakes exit after their lifetime
        assert line.strip() == b"ready", procs.logs()

        # nginx with the committed snippets; only ports, the app name and the listen address are changed.
        def edit(src: Path, pairs: list[tuple[str, str]]) -> Path:
            text = src.read_text()
            for old, new in pairs:
                assert old in text, f"{src.name}: expected {old!r} (update this test if the file changed)"
                text = text.replace(old, new)
            out = tmp / src.name
            out.write_text(text)
            return out

        stub = edit(STUB_STATUS_CONF, [("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{ports['stub']};")])
        gateway = edit(GATEWAY_CONF, [
            ("listen 9180;", f"listen 127.0.0.1:{ports['gateway']};"),
            ("/apps/myapp/", "/apps/demo/"),
            ("http://127.0.0.1:18081/", f"http://127.0.0.1:{ports['blue']}/"),
            ("http://127.0.0.1:18082/", f"http://127.0.0.1:{ports['green']}/"),
            ("http://127.0.0.1:9099/", f"http://127.0.0.1:{ports['ctrl']}/"),
            ("http://127.0.0.1:9100/", f"http://127.0.0.1:{ports['node']}/"),
            ("http://127.0.0.1:9113/", f"http://127.0.0.1:{ports['nginxexp']}/"),
        ])
        ngx = tmp / "nginx"
        ngx.mkdir()
        conf = nginx_conf(ngx, [stub, gateway])
        procs.start("nginx", [binaries["nginx"], "-p", str(ngx), "-c", str(conf)])
        wait_for("nginx stub_status", lambda: b"Active connections" in http_get(f"http://127.0.0.1:{ports['stub']}/stub_status"), 15, logs=procs.logs)

        procs.start("node_exporter", [binaries["prometheus-node-exporter"], f"--web.listen-address=127.0.0.1:{ports['node']}", "--collector.disable-defaults", "--collector.textfile", f"--collector.textfile.directory={textdir}"])
        procs.start("nginx_exporter", [binaries["prometheus-nginx-exporter"], f"-nginx.scrape-uri=http://127.0.0.1:{ports['stub']}/stub_status", f"-web.listen-address=127.0.0.1:{ports['nginxexp']}"])

        # Prometheus: the committed scrape configs and rules, targets pointed at the gateway, 1s intervals.
        cfg = load_yaml(PROM_CONFIG)
        cfg["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        cfg["rule_files"] = [str(PROM_DIR / r) for r in cfg["rule_files"]]
        cfg.pop("alerting")
        gw = f"127.0.0.1:{ports['gateway']}"
        sd = {
            "bluegreen-app": [{"targets": [gw], "labels": {"app": "demo", "color": c}} for c in ("blue", "green")],
            WATCH_JOB: [{"targets": [gw]}],
            "node": [{"targets": [gw], "labels": {"role": "app-server"}}],
            "nginx": [{"targets": [gw], "labels": {"app": "demo"}}],
        }
        jobs = []
        for job in cfg["scrape_configs"]:
            if job["job_name"] in sd:
                f = tmp / f"sd-{job['job_name']}.yml"
                f.write_text(yaml.safe_dump(sd[job["job_name"]]))
                job["file_sd_configs"] = [{"files": [str(f)]}]
                jobs.append(job)
        assert len(jobs) == len(sd), "scrape jobs missing from prometheus.yml"
        cfg["scrape_configs"] = jobs
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        must([tool("promtool"), "check", "config", str(tmp / "prometheus.yml")])
        prom = f"http://127.0.0.1:{ports['prom']}"
        procs.start("prometheus", [binaries["prometheus"], f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{ports['prom']}"])
        wait_for("prometheus ready", lambda: http_get(f"{prom}/-/ready"), 30, logs=procs.logs)

        def all_up() -> bool:
            targets = http_json(f"{prom}/api/v1/targets")["data"]["activeTargets"]
            return len(targets) == 5 and all(t["health"] == "up" for t in targets)

        wait_for("all 5 targets up through the gateway", all_up, 30, logs=lambda: procs.logs() + "\n" + json.dumps(http_json(f"{prom}/api/v1/targets"), indent=1)[-4000:])
        started = time.time() - 1
        assert fakes.stdin is not None
        fakes.stdin.write(b"cron\n")
        fakes.stdin.flush()
        st = Stack(tmp, procs, prom, fakes, started)

        def enough_data() -> bool:
            # 3 cron runs (3 s each) seen, and several scrapes of every target
            runs = st.query('count(count_over_time(bluegreen_reconcile_runs_total{app="cronapp"}[1m])) >= 3')
            scrapes = st.query("min(count_over_time(up[1m])) >= 6")
            return bool(runs and scrapes)

        wait_for("three cron runs and six scrapes", enough_data, 30, interval=0.5, logs=procs.logs)
        procs.check_alive()
        yield st
    finally:
        procs.stop()


def test_live_scrape_labels(stack: Stack) -> None:
    up = {(r["metric"]["job"], r["metric"].get("color", "")): r["value"][1] for r in stack.query("up")}
    assert up == {("bluegreen-app", "blue"): "1", ("bluegreen-app", "green"): "1", (WATCH_JOB, ""): "1", ("node", ""): "1", ("nginx", ""): "1"}, up
    instances = {r["metric"]["instance"] for r in stack.query('up{job="bluegreen-app"}')}
    assert instances == {"demo-blue", "demo-green"}
    # The controller's own `app` label survives on both routes (no exported_app).
    live = {(r["metric"]["job"], r["metric"]["app"], r["metric"]["color"]) for r in stack.query("bluegreen_live_color == 1")}
    assert live == {(WATCH_JOB, "demo", "green"), ("node", "cronapp", "blue")}, live
    assert not stack.query('{__name__=~"bluegreen_.*", exported_app!=""}')


def test_live_every_dashboard_query_returns_data(stack: Stack) -> None:
    d = dashboard()
    checked = 0
    for panel, target in prom_targets(d):
        expr = target["expr"]
        if "bluegreen_accessory_" in expr:
            # accessory panels, one accessory at a time: redis and qdrant (--watch), mongo (textfile)
            for accessory in ("redis", "qdrant", "mongo"):
                q = substitute(expr, accessory=accessory)
                result = stack.query(q) if target.get("instant") else stack.query_range(q)
                assert result, f"panel {panel['title']!r} ref {target['refId']} returned no data for accessory={accessory}: {q}"
                checked += 1
            continue
        if 'job="bluegreen-controller"' in expr:
            apps = ["demo"]  # --watch branch
        elif 'job!="bluegreen-controller"' in expr:
            apps = ["cronapp"]  # textfile branch
        elif "bluegreen_" in expr:
            apps = ["demo", "cronapp"]  # gauges: both routes
        else:
            apps = ["demo"]  # app and nginx panels
        for app in apps:
            q = substitute(expr, app=app)
            result = stack.query(q) if target.get("instant") else stack.query_range(q)
            assert result, f"panel {panel['title']!r} ref {target['refId']} returned no data for app={app}: {q}"
            checked += 1
    assert checked >= 25
    stat = {r["metric"]["app"]: r["metric"]["color"] for r in stack.query(substitute(prom_targets(d)[0][1]["expr"], app=".+"))}
    assert stat == {"demo": "green", "cronapp": "blue"}, "the Live color panel must show each app's live color"
    values = json.loads(http_get(f"{stack.prom}/api/v1/label/app/values?" + urllib.parse.urlencode({"match[]": "bluegreen_app_converged"})))["data"]
    assert set(values) == {"demo", "cronapp"}, "the $app variable's query"
    # The accessory stats (variable $accessory = All) show each accessory's state from both routes.
    by_title = {p["title"]: t for p, t in prom_targets(d)}
    for title, want in (("Accessory up", {"redis": "1", "qdrant": "0", "mongo": "1"}), ("Accessory outdated", {"redis": "0", "qdrant": "0", "mongo": "1"}), ("Accessory blocked", {"redis": "0", "qdrant": "1", "mongo": "1"})):
        got = {r["metric"]["accessory"]: r["value"][1] for r in stack.query(substitute(by_title[title]["expr"]))}
        assert got == want, f"panel {title!r}: {got}"
    (var,) = [v for v in d["templating"]["list"] if v["name"] == "accessory"]
    metric = re.fullmatch(r"label_values\((\w+), accessory\)", var["definition"])
    assert metric, var["definition"]
    values = json.loads(http_get(f"{stack.prom}/api/v1/label/accessory/values?" + urllib.parse.urlencode({"match[]": metric.group(1)})))["data"]
    assert set(values) == {"redis", "qdrant", "mongo"}, "the $accessory variable's query"


def test_live_rules_evaluate_and_cutover_alert_fires_on_both_routes(stack: Stack) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        groups = http_json(f"{stack.prom}/api/v1/rules")["data"]["groups"]
        rs = [r for g in groups for r in g["rules"]]
        return rs if rs and all(r["health"] != "unknown" for r in rs) else None

    rs = wait_for("rules evaluated", evaluated, 15)
    assert len(rs) == len(rules())
    bad = [(r["name"], r.get("lastError")) for r in rs if r["health"] != "ok"]
    assert not bad, f"rules failing to evaluate against real data: {bad}"

    def firing() -> set[tuple[str, str]] | None:
        got = {(a["labels"]["alertname"], a["labels"].get("app", "")) for a in http_json(f"{stack.prom}/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"}
        want = {("BlueGreenCutoverFailed", "demo"), ("BlueGreenCutoverFailed", "cronapp")}
        return got if want <= got else None

    wait_for("BlueGreenCutoverFailed firing for demo (--watch) and cronapp (textfile)", firing, 15)

    def accessory_alerts() -> set[tuple[str, str]]:
        return {(a["labels"]["alertname"], a["labels"].get("accessory", "")) for a in http_json(f"{stack.prom}/api/v1/alerts")["data"]["alerts"] if a["labels"]["alertname"].startswith("BlueGreenAccessory")}

    # Pending (their `for` is minutes): down qdrant (--watch) and outdated mongo (textfile), nothing for redis.
    want_acc = {("BlueGreenAccessoryDown", "qdrant"), ("BlueGreenAccessoryOutdated", "mongo")}
    assert wait_for("accessory alerts pending for qdrant and mongo", lambda: want_acc <= accessory_alerts(), 15)
    assert accessory_alerts() == want_acc, accessory_alerts()
    active = {a["labels"]["alertname"] for a in http_json(f"{stack.prom}/api/v1/alerts")["data"]["alerts"]}
    broken = active & {"BlueGreenAppDown", "BlueGreenLiveColorDown", "BlueGreenNginxDown", "BlueGreenControllerStopped", "BlueGreenControllerMetricsAbsent", "BlueGreenHigh5xxRate", "BlueGreenHighLatency"}
    assert not broken, f"alerts pending or firing on a healthy stack: {broken}"


def test_docs_describe_every_file() -> None:
    text = DOCS.read_text()
    by_dir = ("prometheus/tests/", "prometheus/targets/", "prometheus/rules/", "alertmanager/tests/", "alertmanager/templates/")
    for f in sorted(p for p in MON.rglob("*") if p.is_file() and "secrets" not in p.parts and p.name != ".gitignore"):
        rel = f.relative_to(MON).as_posix()
        rel = next((d for d in by_dir if rel.startswith(d)), rel)
        assert f"monitoring/{rel}" in text, f"docs/monitoring.md does not mention monitoring/{rel}"
