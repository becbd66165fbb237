"""A tiny loopback server in the shape of Prometheus's /api/v1/query, with hostile answers on demand.

`answers` maps a query to what is sent: a JSON document (200), or one of the hostile modes below. Every request
is counted per path in `hits` (a redirect's target must never be asked).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HUGE = "!huge"  # 200 with a 1 MiB JSON-looking body
DRIBBLE = "!dribble"  # 200, then one byte every 0.1 s (for at most 5 s)
NOT_JSON = "!not-json"  # 200 with an HTML page
REDIRECT = "!redirect:"  # + a URL: 302 to it
ERROR = "!error"  # 400 with Prometheus's error document


@dataclass
class PromServer:
    answers: dict[str, Any]
    url: str = ""
    hits: dict[str, int] = field(default_factory=dict)


def _handler(server: PromServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            server.hits[parts.path] = server.hits.get(parts.path, 0) + 1
            query = parse_qs(parts.query).get("query", [""])[0]
            answer = server.answers.get(query, {"status": "success", "data": {"resultType": "vector", "result": []}})
            with contextlib.suppress(OSError):  # the client hung up (its deadline): expected for the hostile modes
                self._answer(answer)

        def _answer(self, answer: Any) -> None:
            if isinstance(answer, str) and answer.startswith(REDIRECT):
                self.send_response(302)
                self.send_header("Location", answer[len(REDIRECT):])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if answer == DRIBBLE:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                for _ in range(50):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.1)
                return
            status, ctype = 200, "application/json"
            if answer == HUGE:
                body = b'{"status":"success","data":' + b" " * (1024 * 1024) + b"}"
            elif answer == NOT_JSON:
                body, ctype = b"<html>hello</html>", "text/html"
            elif answer == ERROR:
                status = 400
                body = json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}).encode()
            else:
                body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def prom_server(answers: dict[str, Any]) -> Iterator[PromServer]:
    server = PromServer(answers)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


def vector(*values: str) -> dict[str, Any]:
    """Prometheus's answer of an instant vector with these sample values."""
    return {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, v]} for v in values]}}
