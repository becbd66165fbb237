"""Prometheus metrics: the one place where the controller's metric names are defined.

`monitoring/` (alerts, dashboards) refers to these names; change them here and there together.
A fresh registry per `Metrics` keeps tests and several in-process runs independent. A run that exports nothing
(`--plan`, `--status`, `--once` without `--metrics-textfile`) counts into `NullMetrics`, which discards everything
and never imports prometheus_client.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from controller import __version__
from controller.kernel.files import write_atomic

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

PREFIX = "bluegreen"

# Metric names (without the _total / _bucket suffixes prometheus-client adds).
RECONCILE_RUNS = f"{PREFIX}_reconcile_runs"  # counter {app, result}
RECONCILE_DURATION = f"{PREFIX}_reconcile_duration_seconds"  # histogram {app}
CUTOVERS = f"{PREFIX}_cutovers"  # counter {app, result=success|failed}
HEALTH_CHECK_FAILURES = f"{PREFIX}_health_check_failures"  # counter {app, color}
DRIFT_REPAIRS = f"{PREFIX}_drift_repairs"  # counter {app, kind}
LIVE_COLOR = f"{PREFIX}_live_color"  # gauge {app, color}: 1 for the color nginx really serves
APP_CONVERGED = f"{PREFIX}_app_converged"  # gauge {app}: 1 when observed == desired
APP_CONDITION = f"{PREFIX}_app_condition"  # gauge {app, condition}: 1 when the condition is True
LAST_SUCCESS = f"{PREFIX}_last_success_timestamp_seconds"  # gauge {app}: last converged pass
LAST_RUN = f"{PREFIX}_last_run_timestamp_seconds"  # gauge: last pass of any result
FAILOVERS = f"{PREFIX}_failovers"  # counter {app}: traffic moved to the previous color by spec.failover
VERIFICATIONS = f"{PREFIX}_verifications"  # counter {app, result=passed|failed|abandoned}: post-switch windows closed
RELEASE_STARTED = f"{PREFIX}_release_start_timestamp_seconds"  # gauge {app, release, image, began}: the live release
NOTIFICATIONS_FAILED = f"{PREFIX}_notifications_failed"  # counter {reason=failed|dropped}: release notifications not delivered
BUILD_INFO = f"{PREFIX}_build"  # info -> bluegreen_build_info{version, python}
# --watch only (WatchMetrics): absent from the --once textfile.
WATCH_TRIGGERS = f"{PREFIX}_watch_triggers"  # counter {source}: what asked for a pass
DOCKER_EVENTS_CONNECTED = f"{PREFIX}_docker_events_connected"  # gauge: 1 while the Docker events stream is up
SPEC_ERRORS = f"{PREFIX}_spec_errors"  # gauge: spec files whose content is invalid (their last valid spec stays in force)
# Git source only (SourceMetrics, controller/runtime/source.py): absent without --git-url.
SOURCE_COMMIT = f"{PREFIX}_source_commit"  # gauge {url, ref, commit}: 1 for the commit in force (info-style)
SOURCE_LAST_FETCH = f"{PREFIX}_source_last_fetch_success_timestamp_seconds"  # gauge: last successful fetch
SOURCE_OK = f"{PREFIX}_source_ok"  # gauge: 1 when the last sync fetched and the fetched commit is in force
SOURCE_REFUSED = f"{PREFIX}_source_commit_refused"  # gauge: 1 while the fetched commit is refused (signature, force-push, path)

# Label values, fixed sets so dashboards and alerts can rely on them.
RESULTS = ("converged", "progressing", "degraded", "blocked", "error", "invalid")
CUTOVER_RESULTS = ("success", "failed")
VERIFY_RESULTS = ("passed", "failed", "abandoned")
NOTIFY_FAILURES = ("failed", "dropped")
DRIFT_KINDS = ("container", "route", "include", "marker", "standby")
CONDITIONS = ("Ready", "Progressing", "Degraded", "RollbackReady", "SecretsStale", "FailedOver")
COLORS = ("blue", "green")
TRIGGER_SOURCES = ("start", "spec", "docker", "resync", "retry")


class Metrics:
    """All controller metrics on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconcile_runs = Counter(
            RECONCILE_RUNS, "Reconcile passes by result.", ["app", "result"], registry=r
        )
        self.reconcile_duration = Histogram(
            RECONCILE_DURATION,
            "Wall time of one reconcile of one app, health waits included.",
            ["app"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.cutovers = Counter(CUTOVERS, "Traffic switches between colors by result.", ["app", "result"], registry=r)
        self.health_check_failures = Counter(
            HEALTH_CHECK_FAILURES, "Health waits that ended without the container passing.", ["app", "color"], registry=r
        )
        self.verifications = Counter(
            VERIFICATIONS, "Post-switch verification windows closed, by verdict (failed: traffic switched back).", ["app", "result"], registry=r
        )
        self.drift_repairs = Counter(
            DRIFT_REPAIRS, "Repairs of state that drifted from the desired state, by kind.", ["app", "kind"], registry=r
        )
        self.live_color = Gauge(LIVE_COLOR, "1 for the color Nginx really routes to.", ["app", "color"], registry=r)
        self.app_converged = Gauge(APP_CONVERGED, "1 when the app's observed state equals its desired state.", ["app"], registry=r)
        self.app_condition = Gauge(APP_CONDITION, "1 when the condition is True.", ["app", "condition"], registry=r)
        self.last_success = Gauge(LAST_SUCCESS, "Unix time of the app's last converged reconcile.", ["app"], registry=r)
        self.last_run = Gauge(LAST_RUN, "Unix time of the last reconcile pass of any result.", registry=r)
        self.failovers = Counter(
            FAILOVERS, "Failovers: traffic moved to the previous color because the live one kept failing.", ["app"], registry=r
        )
        self.release_started = Gauge(
            RELEASE_STARTED,
            "Unix time the live release took traffic (one series per app; Grafana's release annotations).",
            ["app", "release", "image", "began"],
            registry=r,
        )
        self._release_labels: dict[str, tuple[str, str, str]] = {}
        self.notifications_failed = Counter(
            NOTIFICATIONS_FAILED,
            "Release notifications not delivered: failed (every attempt), dropped (queue full, or still queued at the end of a run).",
            ["reason"],
            registry=r,
        )
        self.build_info = Info(BUILD_INFO, "Controller build.", registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})

    def set_live_color(self, app: str, color: str | None) -> None:
        for c in COLORS:
            self.live_color.labels(app=app, color=c).set(1 if c == color else 0)

    def set_conditions(self, app: str, conditions: dict[str, bool]) -> None:
        for name in CONDITIONS:
            self.app_condition.labels(app=app, condition=name).set(1 if conditions.get(name) else 0)

    def set_release(self, app: str, live: tuple[int, str, str, float] | None) -> None:
        """The live release (number, image, began, start time): one series per app, the previous one removed."""
        labels = (str(live[0]), live[1], live[2]) if live is not None else None
        old = self._release_labels.get(app)
        if old is not None and old != labels:
            self.release_started.remove(app, *old)
            del self._release_labels[app]
        if live is not None and labels is not None:
            self.release_started.labels(app, *labels).set(live[3])
            self._release_labels[app] = labels

    def notification_failed(self, reason: str) -> None:
        self.notifications_failed.labels(reason=reason).inc()

    def exposition(self) -> bytes:
        from prometheus_client.exposition import generate_latest

        return generate_latest(self.registry)

    def write_textfile(self, path: Path) -> None:
        """The one atomic write (node_exporter's textfile collector must never read half a file); mode 0644:
        node_exporter runs as another user. HostError when it cannot be written or the directory is not trusted."""
        write_atomic(path, self.exposition(), 0o644)

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Serve /metrics in a daemon thread; returns the server (`.shutdown()` stops it). OSError if the port is taken."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server

    def invalid_spec(self, app: str) -> None:
        """A spec file of `app` (or named like it) could not be loaded: a pass with result `invalid`."""
        self.reconcile_runs.labels(app=app, result="invalid").inc()
        self.last_run.set(time.time())

    def unreachable(self, app: str) -> None:
        """A pass that failed before reaching the app (Docker unreachable, lock busy): result `error`."""
        self.reconcile_runs.labels(app=app, result="error").inc()
        self.app_converged.labels(app=app).set(0)
        self.last_run.set(time.time())


class _Discarded:
    """A metric of `NullMetrics`: any labelled child is itself, every observation is dropped."""

    def labels(self, *values: str, **labels: str) -> _Discarded:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def remove(self, *values: str) -> None:
        pass


_DISCARDED = _Discarded()


class NullMetrics(Metrics):
    """The metrics of a run that exports none: every metric of `Metrics` (same names, same calls) records
    nothing, nothing is registered (`registry` is None) and prometheus_client is never imported."""

    def __init__(self) -> None:  # no super().__init__(): that is what builds the real metrics
        self.registry = cast("CollectorRegistry", None)
        self._release_labels = {}  # set_release's bookkeeping (its metric discards what it is given)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _DISCARDED  # only reached for the metric attributes `Metrics.__init__` sets

    def exposition(self) -> bytes:
        raise RuntimeError("NullMetrics exports nothing")


class WatchMetrics:
    """Metrics of the --watch loop itself, on the same registry as `Metrics`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Gauge

        self.triggers = Counter(WATCH_TRIGGERS, "Reconcile passes asked for, by what asked.", ["source"], registry=registry)
        self.docker_events_connected = Gauge(
            DOCKER_EVENTS_CONNECTED, "1 while the Docker events stream is connected.", registry=registry
        )
        self.spec_errors = Gauge(
            SPEC_ERRORS, "Spec files whose current content is invalid; their last valid spec stays in force.", registry=registry
        )


class SourceMetrics:
    """The git source's metrics (--git-url), on the same registry as `Metrics`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Gauge

        self.commit = Gauge(SOURCE_COMMIT, "1 for the commit of the git source in force.", ["url", "ref", "commit"], registry=registry)
        self.last_fetch = Gauge(SOURCE_LAST_FETCH, "Unix time of the last successful fetch of the git source.", registry=registry)
        self.ok = Gauge(SOURCE_OK, "1 when the last sync of the git source succeeded and its commit is in force.", registry=registry)
        self.refused = Gauge(SOURCE_REFUSED, "1 while the fetched commit is refused (signature, history rewritten, path).", registry=registry)

    def set(self, *, url: str, ref: str, commit: str | None, last_fetch_ok: float | None, ok: bool, refused: bool) -> None:
        self.commit.clear()  # one series: the commit in force now
        if commit is not None:
            self.commit.labels(url=url, ref=ref, commit=commit).set(1)
        self.last_fetch.set(last_fetch_ok or 0)
        self.ok.set(1 if ok else 0)
        self.refused.set(1 if refused else 0)
