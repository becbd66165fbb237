"""A loopback webhook receiver for the notification tests (drivers/notify.py): records every JSON body it gets."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """A loopback webhook: `mode` ok (204), fail (500), hang (never answers until closed), redirect (307 to /elsewhere)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.got = threading.Condition()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.got:
                    outer.bodies.append(json.loads(data))
                    outer.paths.append(self.path)
                    outer.got.notify_all()
                if outer.mode == "hang":
                    outer.release.wait(30)
                    return
                code = {"ok": 204, "fail": 500, "redirect": 307}[outer.mode]
                self.send_response(code)
                if code == 307:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0KEN"

    def wait_for(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        with self.got:
            assert self.got.wait_for(lambda: len(self.bodies) >= n, timeout), f"{len(self.bodies)} of {n} bodies"
            return list(self.bodies)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
