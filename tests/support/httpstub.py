"""Real HTTP servers on 127.0.0.1 for tests: Ollama-like, vLLM-like, or any routes you give.

A route is ``path -> Reply``; the server answers it for GET. Nothing is mocked: the code under test
opens a real TCP connection to a free port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.lab.host import free_port  # noqa: F401 - re-exported for the tests


@dataclass
class Reply:
    status: int = 200
    body: str | dict | list = ""
    delay: float = 0.0                 # seconds before answering (to provoke client timeouts)
    bearer: str | None = None          # if set, answer 401 unless "Authorization: Bearer <bearer>"
    content_type: str = "application/json"
    fail_first: int = 0                # answer 503 to this many requests first (a service still starting)


_SEEN: dict[str, list[dict]] = {}


def requests_seen(url: str) -> list[dict]:
    """The requests a server from :func:`serve` got so far (path, Authorization header)."""
    return _SEEN[url]


@contextmanager
def serve(routes: Mapping[str, Reply]) -> Iterator[str]:
    """Serve ``routes`` on a free 127.0.0.1 port in a thread; yields the base URL."""
    stop = threading.Event()
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
            reply = routes.get(self.path.split("?", 1)[0])
            if reply is None:
                return self._send(404, {"error": "not found"}, "application/json")
            if reply.delay:
                stop.wait(reply.delay)
            if sum(1 for s in seen if s["path"] == self.path) <= reply.fail_first:
                return self._send(503, {"error": "starting"}, "application/json")
            if reply.bearer is not None and self.headers.get("Authorization") != f"Bearer {reply.bearer}":
                return self._send(401, {"error": {"message": "Unauthorized", "code": 401}}, "application/json")
            self._send(reply.status, reply.body, reply.content_type)

        def _send(self, status: int, body, ctype: str) -> None:
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    _SEEN[url] = seen
    try:
        yield url
    finally:
        _SEEN.pop(url, None)
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def ollama_tags(*names: str) -> dict:
    """Ollama's ``GET /api/tags`` answer for these model names."""
    return {"models": [{"name": n, "model": n, "size": 1, "digest": "0" * 64, "details": {}} for n in names]}


def vllm_models(*ids: str) -> dict:
    """vLLM's (OpenAI-style) ``GET /v1/models`` answer for these model ids."""
    return {"object": "list", "data": [{"id": i, "object": "model", "owned_by": "vllm", "root": i} for i in ids]}
