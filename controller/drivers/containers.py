"""Docker through the SDK, thin.

docker-py's exceptions are mapped onto the controller's tree here (`_RULES`) and in `registry.py` (pulls):
nowhere above `controller/drivers/` does any code know them.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from controller.drivers.mapping import Rule, map_exceptions
from controller.kernel.errors import DockerError, DockerUnavailable, ImageError, InvalidInput
from controller.world.facts import COLOR_CONTAINER_NAME, LABEL_APP, ContainerFact, ImageFact
from controller.world.protocol import ContainerRequest, RunState

T = TypeVar("T")
# An image without RepoDigests (built locally, not pushed yet) is asked about again after this long.
NO_DIGEST_RECHECK = 60.0
# Names we consider ours even when a human created them without our labels.


def _unreachable(e: BaseException) -> bool:
    """docker-py wraps a failed connection (while it asks the daemon's API version) in a bare DockerException."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


class _DaemonUnreachable(Exception):
    """A DockerException that is a connection failure underneath: only this one is temporary."""


# First match wins: the specific rows first. A client-side DockerException (InvalidArgument such as
# `"host" network_mode is incompatible with port_bindings`, a malformed DOCKER_HOST, TLS settings) is a
# DockerError — permanent, said as it is — not "daemon unreachable", which is retried as temporary.
_RULES = (
    Rule(docker.errors.ImageNotFound, ImageError, "image not found", lambda e: _explain(e)),
    Rule(docker.errors.NotFound, DockerError, "not found", lambda e: _explain(e)),
    Rule(docker.errors.APIError, DockerError, "", lambda e: _explain(e)),
    Rule(
        (requests.exceptions.ConnectionError, requests.exceptions.Timeout, _DaemonUnreachable),
        DockerUnavailable,
        "Docker daemon unreachable",
    ),
    Rule(docker.errors.DockerException, DockerError),
)


# A malformed --docker-url / DOCKER_HOST (`tcp://h:abc`) fails in urllib's parser, not in docker-py's tree.
_BAD_URL = (Rule((ValueError, TypeError), InvalidInput, "invalid"),)


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    """Map docker-py / requests errors onto the controller's tree, with one-line messages (`_RULES`)."""
    with map_exceptions(_RULES, what):
        try:
            yield
        except docker.errors.DockerException as e:
            if not isinstance(e, docker.errors.APIError) and _unreachable(e):
                raise _DaemonUnreachable(_first_line(e)) from e
            raise


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def _explain(e: docker.errors.APIError) -> str:
    return _first_line(e) if not getattr(e, "explanation", None) else str(e.explanation).splitlines()[0][:300]


def _parse_time(value: str | None) -> float | None:
    """Docker's RFC 3339 with nanoseconds; Python 3.10's fromisoformat takes neither 'Z' nor 9 digits."""
    if not value or value.startswith("0001-"):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", value)
    if not m:
        return None
    base = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    frac = float("0." + m.group(2)) if m.group(2) else 0.0
    return base.astimezone(timezone.utc).timestamp() + frac


def process_uptime(pid: object) -> float | None:
    """How long host process `pid` (a container's State.Pid) has run, on the boot clock: /proc's start time in clock
    ticks since boot against CLOCK_BOOTTIME. None when it cannot be read (gone, no /proc, not a pid)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read(4096).rsplit(b")", 1)[1].split()  # the command name, in parentheses, may hold anything
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat(5); fields[0] is field 3
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError):
        return None


def restart_policy(name: str) -> dict[str, Any]:
    """Docker's RestartPolicy for a spec's `restartPolicy` (on-failure gives up after 5 tries)."""
    policy: dict[str, Any] = {"Name": "" if name == "no" else name}
    if name == "on-failure":
        policy["MaximumRetryCount"] = 5
    return policy


class DockerDriver:
    def __init__(self, base_url: str | None = None, timeout: float = 60.0) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()
        self._digests: dict[str, tuple[str, ...]] = {}  # image id -> RepoDigests
        self._no_digest: dict[str, float] = {}  # image id -> monotonic time it had none (asked again later)

    def client(self) -> Any:
        # Connect lazily: --plan on a dead daemon must fail with our message, not at import time.
        with self._lock:
            if self._client is None:
                with _mapped("connect"), map_exceptions(_BAD_URL, f"Docker URL {self._base_url or 'from DOCKER_HOST'}"):
                    self._client = self._new_client()
            return self._client

    def _new_client(self) -> Any:
        if self._base_url:
            return docker.DockerClient(base_url=self._base_url, timeout=int(self._timeout))
        return docker.from_env(timeout=int(self._timeout))

    def reset(self) -> None:
        """Forget the connection (after a daemon restart)."""
        with self._lock:
            self._client = None

    def events(self, filters: dict[str, Any]) -> EventStream:
        """Live daemon events (decoded dicts) on a connection of their own; `close()` ends it from any thread."""
        with _mapped("events"):
            client = self._new_client()
            try:
                stream = client.api.events(filters=filters, decode=True)
            except BaseException:
                client.close()
                raise
        return EventStream(client, stream)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        with _mapped(what):
            return fn()

    def list_containers(self) -> list[ContainerFact]:
        api = self.client().api
        rows = self._call("list containers", lambda: api.containers(all=True))
        facts = []
        for row in rows:
            names = [n.lstrip("/") for n in row.get("Names") or []]
            name = names[0] if names else ""
            labels = row.get("Labels") or {}
            if LABEL_APP not in labels and not COLOR_CONTAINER_NAME.match(name):
                continue
            state = row.get("State") or ""
            host_ip, host_port = _published(row.get("Ports") or [])
            if host_port is None and state != "running":
                # Stopped containers list no ports; their bindings are in the host config.
                host_ip, host_port = self._bound_port(row["Id"])
            facts.append(
                ContainerFact(
                    name=name,
                    id=row["Id"],
                    image=row.get("Image") or "",
                    image_id=row.get("ImageID") or "",
                    labels=dict(labels),
                    state=state,
                    host_ip=host_ip,
                    host_port=host_port,
                    created=float(row.get("Created") or 0),
                    repo_digests=self._repo_digests(row.get("ImageID") or ""),
                )
            )
        return facts

    def _repo_digests(self, image_id: str) -> tuple[str, ...]:
        """RepoDigests of an image id (what a registry calls it), cached: an id's content never changes."""
        if not image_id:
            return ()
        cache = self._digests
        if image_id not in cache:
            asked = self._no_digest.get(image_id)
            if asked is not None and time.monotonic() - asked < NO_DIGEST_RECHECK:
                return ()  # one inspect per image a minute, not one per container per pass
            api = self.client().api
            try:
                info = self._call("inspect image", lambda: api.inspect_image(image_id))
            except (DockerError, ImageError):
                return ()  # removed meanwhile (the container keeps running)
            digests = tuple(sorted(str(d) for d in info.get("RepoDigests") or []))
            if not digests:
                self._no_digest[image_id] = time.monotonic()
                return ()  # not pulled or pushed (yet): ask again after NO_DIGEST_RECHECK
            cache[image_id] = digests
        return cache[image_id]

    def _bound_port(self, cid: str) -> tuple[str | None, int | None]:
        api = self.client().api
        try:
            info = self._call("inspect container", lambda: api.inspect_container(cid))
        except DockerError:
            return None, None  # removed meanwhile
        bindings = (info.get("HostConfig") or {}).get("PortBindings") or {}
        for binds in bindings.values():
            for b in binds or []:
                if b.get("HostPort"):
                    return b.get("HostIp") or None, int(b["HostPort"])
        return None, None

    def run_state(self, name: str) -> RunState | None:
        api = self.client().api
        try:
            info = self._call(f"inspect {name}", lambda: api.inspect_container(name))
        except DockerError:
            return None  # removed meanwhile
        state = info.get("State") or {}
        count = info.get("RestartCount")
        return RunState(
            running=bool(state.get("Running")) and not state.get("Restarting"),
            restarting=bool(state.get("Restarting")),
            started_at=_parse_time(state.get("StartedAt")),
            # Unknown counts as restarted: a fact we cannot read must not make a container look steady.
            restart_count=count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 1,
            uptime=process_uptime(state.get("Pid")) if state.get("Running") else None,
        )

    def ensure_image(self, image: str) -> None:
        client = self.client()
        try:
            self._call(f"image {image}", lambda: client.images.get(image))
            return
        except ImageError:
            pass
        from controller.drivers.registry import ensure_pulled  # ECR via boto3, else ~/.docker/config.json

        ensure_pulled(client, image)
        self._no_digest.clear()  # a pull adds RepoDigests: status must show them at once

    def create(self, req: ContainerRequest) -> None:
        self.ensure_image(req.image)
        client = self.client()
        policy = restart_policy(req.restart_policy)
        kwargs: dict[str, Any] = dict(
            name=req.name,
            detach=True,
            labels=req.labels,
            environment=req.env,
            ports={f"{req.container_port}/tcp": (req.host_ip, req.host_port)},
            restart_policy=policy,
            stop_signal="SIGTERM",
        )
        if req.network:
            kwargs["network"] = req.network
        # spec.resources (issue 14): only what is set, so a spec without limits creates what it always did.
        for key, value in (
            ("mem_limit", req.memory),
            ("mem_reservation", req.memory_reservation),
            ("nano_cpus", req.nano_cpus),
            ("pids_limit", req.pids_limit),
        ):
            if value is not None:
                kwargs[key] = value
        container = self._call(f"create {req.name}", lambda: client.containers.create(req.image, **kwargs))
        try:
            self._call(f"start {req.name}", container.start)
        except DockerError as e:
            # e.g. the host port is taken: leave nothing half-made behind.
            self._call(f"remove {req.name}", lambda: container.remove(force=True))
            raise e

    def start(self, name: str) -> None:
        api = self.client().api
        self._call(f"start {name}", lambda: api.start(name))

    def stop(self, name: str, timeout: int) -> None:
        api = self.client().api
        self._call(f"stop {name}", lambda: api.stop(name, timeout=timeout))

    def remove(self, name: str) -> None:
        api = self.client().api
        try:
            self._call(f"remove {name}", lambda: api.remove_container(name, force=True))
        except DockerError as e:
            if "not found" not in str(e).lower() and "no such container" not in str(e).lower():
                raise


    # Images (pruning) ---------------------------------------------------------------------------
    def list_images(self) -> list[ImageFact]:
        api = self.client().api
        rows = self._call("list images", lambda: api.images())
        facts = []
        for row in rows or []:
            refs = tuple(
                str(r)
                for r in [*(row.get("RepoTags") or []), *(row.get("RepoDigests") or [])]
                if isinstance(r, str) and not r.startswith("<none>")
            )
            if refs and isinstance(row.get("Id"), str):
                created = row.get("Created")
                facts.append(ImageFact(id=row["Id"], references=refs, created=float(created) if isinstance(created, (int, float)) else 0.0))
        return facts

    def image_obtainable(self, image: str) -> str | None:
        client = self.client()
        try:
            self._call(f"image {image}", lambda: client.images.get(image))
            return None
        except ImageError:
            pass
        from controller.drivers.aws import redacted_line
        from controller.drivers.registry import auth_for  # ECR via boto3, else ~/.docker/config.json

        try:
            # The daemon asks the registry for the manifest (GET /distribution/{name}/json): nothing is pulled.
            self._call(f"image {image}", lambda: client.api.inspect_distribution(image, auth_config=auth_for(image)))
            return None
        except (ImageError, DockerError) as e:
            return f"image {image} is not present locally and cannot be pulled: {redacted_line(str(e))}"

    def image_ids_in_use(self) -> frozenset[str]:
        api = self.client().api
        rows = self._call("list containers", lambda: api.containers(all=True))
        return frozenset(str(r.get("ImageID")) for r in rows or [] if r.get("ImageID"))

    def remove_image(self, image_id: str) -> str | None:
        api = self.client().api
        with _mapped(f"remove image {image_id[:19]}"):
            try:
                # Never forced: the daemon refuses (409) while any container, running or stopped, uses the image,
                # or another repository names it. That refusal is the race-safe check, not an error.
                api.remove_image(image_id, force=False, noprune=False)
            except docker.errors.NotFound:
                return None  # already gone (a pass killed after the removal, or someone else)
            except docker.errors.APIError as e:
                if e.status_code == 409:
                    return _explain(e)
                raise
        return None

    # Capacity facts (issue 14; drivers/capacity.py composes them) ---------------------------------------
    def info(self) -> dict[str, Any]:
        api = self.client().api
        info: dict[str, Any] = self._call("docker info", api.info)
        return info

    def image_size(self, image: str) -> int | None:
        """Size of a local image (by reference or id); None when it is not present."""
        api = self.client().api
        try:
            info = self._call(f"inspect image {image}", lambda: api.inspect_image(image))
        except (DockerError, ImageError):
            return None
        size = info.get("Size")
        return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else 0

    def memory_usage(self, name: str) -> int | None:
        """Memory a running container uses now as `docker stats` shows it (page cache that can be dropped
        excluded); None when it is not running or Docker does not say. One sample (one_shot): no 1 s wait."""
        api = self.client().api
        try:
            stats = self._call(f"stats {name}", lambda: api.stats(name, stream=False, one_shot=True))
        except DockerError:
            return None
        mem = stats.get("memory_stats") if isinstance(stats, dict) else None
        if not isinstance(mem, dict) or not isinstance(mem.get("usage"), int):
            return None
        raw = mem.get("stats")
        detail: dict[str, Any] = raw if isinstance(raw, dict) else {}
        # cgroup v1: total_inactive_file; v2: inactive_file (docker CLI's calculateMemUsageUnixNoCache)
        cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        usage: int = mem["usage"]
        return usage - cache if isinstance(cache, int) and 0 <= cache < usage else usage


class EventStream:
    """Iterates daemon events until the daemon goes away (then it simply ends) or `close()` is called."""

    def __init__(self, client: Any, stream: Any) -> None:
        self._client = client
        self._stream = stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with _mapped("events"):
            for event in self._stream:
                if isinstance(event, dict):
                    yield event

    def close(self) -> None:
        for close in (self._stream.close, self._client.close):
            with suppress(Exception):  # already closed, or the daemon is gone: nothing left to release
                close()


def _published(ports: list[dict[str, Any]]) -> tuple[str | None, int | None]:
    for p in ports:
        if p.get("PublicPort") and p.get("Type", "tcp") == "tcp" and p.get("IP") not in ("::",):
            return p.get("IP") or None, int(p["PublicPort"])
    for p in ports:
        if p.get("PublicPort"):
            return p.get("IP") or None, int(p["PublicPort"])
    return None, None
