"""Deploy gates on the host, thin: hook containers through the Docker SDK, check commands through subprocess.

Everything here is bounded: a hook's output is read from its tail, at most OUTPUT_CAP bytes; a check command's
output is drained by a thread that keeps only the last OUTPUT_CAP bytes, and the command (its whole process
group) is killed at its timeout. Nothing here redacts, so nothing here cuts a line either: the lines come back
whole, for the caller to redact before it trims them (controller/app/steps/gates.py). Where the byte cap cut the output,
its first line, which the cut began inside (maybe inside a secret), is dropped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import Any

from controller.drivers.containers import DockerDriver, _mapped, _parse_time
from controller.kernel.errors import DockerError
from controller.world.protocol import (
    CHECK_PATH,
    HOOK_LOG_LINES_READ,
    OUTPUT_CAP,
    CommandResult,
    HookRequest,
    HookState,
)

WAIT_POLL = 0.2  # seconds between two inspects while a hook runs


def find_hook(docker: DockerDriver, labels: dict[str, str]) -> HookState | None:
    api = docker.client().api
    with _mapped("list hook containers"):
        rows = api.containers(all=True, filters={"label": [f"{k}={v}" for k, v in sorted(labels.items())]})
    for row in rows:
        name = ((row.get("Names") or [""])[0]).lstrip("/")
        try:
            with _mapped(f"inspect {name}"):
                info = api.inspect_container(row["Id"])
        except DockerError:  # removed meanwhile (404): look at the next one
            continue
        state = info.get("State") or {}
        status = str(state.get("Status") or "")
        code = state.get("ExitCode")
        return HookState(
            name=name,
            state=status,
            exit_code=code if status in ("exited", "dead") and isinstance(code, int) else None,
            started_at=_parse_time(state.get("StartedAt")),
        )
    return None


def create_hook(docker: DockerDriver, req: HookRequest) -> None:
    docker.ensure_image(req.image)
    client = docker.client()
    kwargs: dict[str, Any] = dict(
        name=req.name,
        entrypoint=list(req.command),  # like Kubernetes' `command`: the image's ENTRYPOINT and CMD are not used
        labels=req.labels,
        environment=req.env,
        detach=True,
        stdin_open=False,
        tty=False,
        restart_policy={"Name": ""},
    )
    if req.network:
        kwargs["network"] = req.network
    with _mapped(f"create {req.name}"):
        client.containers.create(req.image, **kwargs)


def wait_hook(docker: DockerDriver, name: str, timeout: float) -> int | None:
    """Polls `docker inspect` (a blocking /wait would need a read timeout that ends the connection)."""
    api = docker.client().api
    deadline = time.monotonic() + timeout
    while True:
        with _mapped(f"inspect {name}"):
            state = api.inspect_container(name).get("State") or {}
        if state.get("Status") in ("exited", "dead"):
            code = state.get("ExitCode")
            return code if isinstance(code, int) and not isinstance(code, bool) else -1
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(WAIT_POLL, left))


def hook_logs(docker: DockerDriver, name: str) -> tuple[str, ...]:
    api = docker.client().api
    data = _Tail()
    with _mapped(f"logs of {name}"):
        stream = api.logs(name, stdout=True, stderr=True, stream=True, follow=False, tail=HOOK_LOG_LINES_READ)
        try:
            for chunk in stream:
                data.add(chunk)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
    return data.lines()


def run_check(argv: list[str], env: dict[str, str], timeout: float) -> CommandResult:
    """`argv` without a shell, stdin closed, stdout+stderr merged and drained (only the tail kept)."""
    try:
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={"PATH": CHECK_PATH, "LANG": "C.UTF-8", **env},
            start_new_session=True,  # its own process group: the timeout kills what it started too
            close_fds=True,
        )
    except OSError as e:
        return CommandResult(127, (f"{argv[0]}: {e.strerror or e}",))
    tail = _Tail()
    assert p.stdout is not None
    out = p.stdout
    fd = out.fileno()

    def drain() -> None:
        try:
            for chunk in iter(lambda: os.read(fd, 65536), b""):
                tail.add(chunk)
        except OSError:
            pass  # closed below after the join timed out (a grandchild outside the group kept the pipe open)

    reader = threading.Thread(target=drain, name="check-output", daemon=True)
    reader.start()
    code: int | None
    try:
        code = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    # On a timeout, and also when it exited but left children holding the pipe: end the whole group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    if code is None:
        p.wait()
    reader.join(timeout=2)
    out.close()
    return CommandResult(code, tail.lines())


class _Tail:
    """The last OUTPUT_CAP bytes of an output, and whether the bytes dropped before them ended inside a line."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.cut = False

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        drop = len(self.data) - OUTPUT_CAP
        if drop > 0:
            self.cut = self.data[drop - 1] != ord("\n")
            del self.data[:drop]

    def lines(self) -> tuple[str, ...]:
        """Its lines, whole and split at "\\n" only (joined again they are its text, but a last newline), but
        the one the cut fell inside; the caller redacts them, then trims and keeps the last ones."""
        text = bytes(self.data).decode("utf-8", errors="replace")
        lines = text.removesuffix("\n").split("\n") if text else []
        return tuple(lines[1:] if self.cut else lines)
