"""A tiny OpenAI-compatible chat server for tests: scripted replies, recorded requests, 127.0.0.1 only.

    with StubOpenAI() as server:
        server.script(Reply.attributes(["pointed ears", "whiskers", "striped fur"]), Reply.status(429))
        client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        ...
        server.requests  # the JSON bodies received, in order

It implements ``POST /v1/chat/completions`` only. Each request takes the next scripted :class:`Reply`; when
the script runs out the server answers HTTP 500 with "no scripted reply left", so a runaway retry loop
fails loudly instead of hanging. Runs ``http.server`` in a daemon thread on a free port.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: an HTTP status, headers and (for 200) the assistant message content."""

    status: int = 200
    content: str | None = None
    headers: dict = field(default_factory=dict)

    @classmethod
    def attributes(cls, attributes: list) -> "Reply":
        """A well-formed JSON-mode reply ``{"attributes": [...]}``."""
        return cls(200, json.dumps({"attributes": attributes}))

    @classmethod
    def text(cls, content: str) -> "Reply":
        """A 200 reply with arbitrary content (for malformed replies)."""
        return cls(200, content)

    @classmethod
    def error(cls, status: int, headers: dict | None = None) -> "Reply":
        """An HTTP error in OpenAI's error format, e.g. ``Reply.error(429, {"Retry-After": "1"})``."""
        return cls(status, None, dict(headers or {}))


def completion_body(content: str | None, model: str) -> dict:
    """A ``chat.completion`` object as OpenAI's API returns it."""
    return {
        "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class StubOpenAI:
    """The server; use as a context manager (or call :meth:`close`)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue replies, answered in order."""
        with self._lock:
            self._queue.extend(replies)

    def next_reply(self, body: dict, headers: dict) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            return self._queue.popleft() if self._queue else Reply(500, "no scripted reply left")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "StubOpenAI":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _handler_class(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.path != CHAT_PATH:
                    return self._send(404, {"error": {"message": f"stub serves only {CHAT_PATH}"}}, {})
                body = json.loads(raw or b"{}")
                reply = stub.next_reply(body, {k.lower(): v for k, v in self.headers.items()})
                if reply.status == 200:
                    return self._send(200, completion_body(reply.content, body.get("model", "")), reply.headers)
                error = {"message": reply.content or f"stub error {reply.status}", "type": "stub_error",
                         "param": None, "code": None}
                return self._send(reply.status, {"error": error}, reply.headers)

            def _send(self, status: int, payload: dict, headers: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        return Handler
