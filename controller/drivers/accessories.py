"""`DockerAccessories`: the accessory half of the real `World` (issue 13), composed into `drivers.host.HostWorld`
on its Docker connection (`DockerDriver`) and probe client. Start, stop and remove are the containers driver's.

Volumes are created, listed and mounted here, never removed. A one-off (backup) container is removed when it
ends, and a leftover of a killed run (same name, our one-off label) is removed before the next one starts.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from controller.drivers.containers import DockerDriver, restart_policy
from controller.drivers.probes import Prober
from controller.kernel.errors import DockerError, ImageError, one_line
from controller.world.facts import LABEL_ACCESSORY, LABEL_ACCESSORY_IMAGE, LABEL_ONEOFF, AccessoryFact
from controller.world.protocol import AccessoryRequest, HealthResult, OneOff, OneOffResult, exec_result


class DockerAccessories:
    def __init__(self, docker: DockerDriver, probes: Prober) -> None:
        self.docker = docker
        self._probes = probes

    def _api(self) -> Any:
        return self.docker.client().api

    def _call(self, what: str, fn: Any) -> Any:
        return self.docker._call(what, fn)  # the driver's one mapping of docker-py errors

    # Containers ----------------------------------------------------------------------------------------
    def list_accessories(self, names: frozenset[str]) -> list[AccessoryFact]:
        api = self._api()
        rows = self._call("list containers", lambda: api.containers(all=True))
        out = []
        for row in rows:
            name = next((n.lstrip("/") for n in row.get("Names") or []), "")
            labels = dict(row.get("Labels") or {})
            if LABEL_ACCESSORY not in labels and name not in names:
                continue
            if LABEL_ONEOFF in labels:
                continue
            nets = ((row.get("NetworkSettings") or {}).get("Networks") or {}).keys()
            mounts = [(str(m.get("Name")), str(m.get("Destination"))) for m in row.get("Mounts") or [] if m.get("Type") == "volume" and m.get("Name")]
            out.append(
                AccessoryFact(
                    name=name,
                    id=row["Id"],
                    image=labels.get(LABEL_ACCESSORY_IMAGE) or row.get("Image") or "",
                    labels=labels,
                    state=row.get("State") or "",
                    networks=tuple(sorted(nets)),
                    mounts=tuple(sorted(mounts)),
                )
            )
        return out

    def create(self, req: AccessoryRequest) -> None:
        self.docker.ensure_image(req.image)
        client = self.docker.client()
        policy = restart_policy(req.restart_policy)
        kwargs: dict[str, Any] = dict(
            name=req.name,
            detach=True,
            labels=req.labels,
            environment=req.env,
            ports={f"{cp}/tcp": (req.host_ip, hp) for cp, hp in req.ports.items()},
            volumes={v: {"bind": path, "mode": "rw"} for v, path in req.volumes.items()},
            restart_policy=policy,
            stop_signal="SIGTERM",
        )
        if req.command is not None:
            kwargs["command"] = req.command
        if req.network:
            kwargs["network"] = req.network
            kwargs["networking_config"] = {req.network: client.api.create_endpoint_config(aliases=list(req.aliases))}
        container = self._call(f"create {req.name}", lambda: client.containers.create(req.image, **kwargs))
        try:
            self._call(f"start {req.name}", container.start)
        except DockerError:
            self._call(f"remove {req.name}", lambda: container.remove(force=True))  # the container, never a volume
            raise

    def rename(self, name: str, new_name: str) -> None:
        api = self._api()
        self._call(f"rename {name} to {new_name}", lambda: api.rename(name, new_name))

    def image_volumes(self, image: str) -> tuple[str, ...] | None:
        api = self._api()
        try:
            info = self._call(f"inspect image {image}", lambda: api.inspect_image(image))
        except ImageError:
            return None
        return tuple(sorted((info.get("Config") or {}).get("Volumes") or {}))

    # Volumes and networks --------------------------------------------------------------------------------
    def list_volumes(self) -> set[str]:
        api = self._api()
        res = self._call("list volumes", api.volumes)
        return {str(v.get("Name")) for v in (res or {}).get("Volumes") or []}

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        api = self._api()
        self._call(f"create volume {name}", lambda: api.create_volume(name=name, labels=labels))

    def list_networks(self) -> set[str]:
        api = self._api()
        return {str(n.get("Name")) for n in self._call("list networks", api.networks) or []}

    def create_network(self, name: str, labels: dict[str, str]) -> None:
        api = self._api()
        self._call(f"create network {name}", lambda: api.create_network(name, driver="bridge", labels=labels, check_duplicate=True))

    def connect_network(self, network: str, container: str, aliases: tuple[str, ...]) -> None:
        api = self._api()
        info = self._call(f"inspect {container}", lambda: api.inspect_container(container))
        if network in ((info.get("NetworkSettings") or {}).get("Networks") or {}):
            return
        self._call(f"connect {container} to {network}", lambda: api.connect_container_to_network(container, network, aliases=list(aliases)))

    # One-off containers and checks -------------------------------------------------------------------------
    def run_oneoff(self, job: OneOff, timeout: float) -> OneOffResult:
        api = self._api()
        self.docker.ensure_image(job.image)
        try:
            old = self._call(f"inspect {job.name}", lambda: api.inspect_container(job.name))
        except DockerError:
            old = None
        if old is not None:
            if LABEL_ONEOFF not in ((old.get("Config") or {}).get("Labels") or {}):
                raise DockerError(f"{job.name}: a container of that name exists and is not a one-off of ours")
            self.docker.remove(job.name)  # the leftover of a killed run
        host_config = api.create_host_config(binds={v: {"bind": p, "mode": "rw"} for v, p in job.volumes.items()}, network_mode=job.network)
        created = self._call(
            f"create {job.name}",
            lambda: api.create_container(
                job.image, command=job.command, name=job.name, labels=job.labels, environment=job.env, host_config=host_config
            ),
        )
        cid = created["Id"]
        try:
            self._call(f"start {job.name}", lambda: api.start(cid))
            deadline = time.monotonic() + timeout
            while True:
                state = (self._call(f"inspect {job.name}", lambda: api.inspect_container(cid)).get("State") or {})
                if not state.get("Running"):
                    code = int(state.get("ExitCode", -1))
                    break
                if time.monotonic() >= deadline:
                    return OneOffResult(None, f"timed out after {timeout:g}s")
                time.sleep(0.2)
            raw = self._call(f"logs {job.name}", lambda: api.logs(cid, stdout=True, stderr=True, tail=5))
            lines = [ln for ln in bytes(raw).decode("utf-8", "replace").splitlines() if ln.strip()]
            return OneOffResult(code, one_line(lines[-1]) if lines else "")
        finally:
            self.docker.remove(cid)

    def check_command(self, name: str, argv: list[str], timeout: float) -> HealthResult:
        api = self._api()
        try:
            ex = self._call(f"exec in {name}", lambda: api.exec_create(name, argv, stdout=True, stderr=True))
            out = self._call(f"exec in {name}", lambda: api.exec_start(ex["Id"]))
            code = self._call(f"exec in {name}", lambda: api.exec_inspect(ex["Id"])).get("ExitCode")
        except DockerError as e:
            return HealthResult(False, one_line(e))
        return exec_result(code, bytes(out).decode("utf-8", "replace"))

    def _address(self, name: str, network: str | None) -> str | None:
        api = self._api()
        try:
            info = self._call(f"inspect {name}", lambda: api.inspect_container(name))
        except DockerError:
            return None
        nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
        net = nets.get(network) if network else next(iter(nets.values()), None)
        return (net or {}).get("IPAddress") or None

    def check_tcp(self, name: str, network: str | None, host: str | None, port: int, timeout: float) -> HealthResult:
        addr = host or self._address(name, network)
        if addr is None:
            return HealthResult(False, "no address")
        try:
            with socket.create_connection((addr, port), timeout=timeout):
                return HealthResult(True, f"{addr}:{port} accepts")
        except OSError as e:
            return HealthResult(False, f"{addr}:{port}: {e.strerror or type(e).__name__}")

    def check_http(self, name: str, network: str | None, host: str | None, port: int, path: str, expect: int, timeout: float) -> HealthResult:
        addr = host or self._address(name, network)
        if addr is None:
            return HealthResult(False, "no address")
        shown = f"[{addr}]" if ":" in addr else addr
        return self._probes.health(f"http://{shown}:{port}{path}", expect, timeout)

