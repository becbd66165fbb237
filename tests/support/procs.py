"""A server the tests start as a child process (moto_server, docker-registry): stop it on exit, whatever happens."""

from __future__ import annotations

import subprocess
from typing import Any


class ServerProcess:
    """Mixin: `self.proc` is the child; `stop()` terminates it (then kills it), `with` stops it."""

    proc: subprocess.Popen[Any]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
