"""A local OpenAI-compatible chat server that answers attribute questions from a pool: an LLM stand-in.

Notebook 06 and offline classrooms use it to drive the *real* ``openai`` client, and everything
:class:`~uniil_lib.attributes.AttributeGenerator` does around it (JSON validation, retries with backoff,
the disk cache), without internet or an API key::

    with PoolServer(load_shipped_pool()) as server:
        generator = AttributeGenerator(api_key="local", base_url=server.base_url, cache_dir=tmp)
        generator.class_attributes("cat face")   # -> the pool's attributes of "cat face"
        server.fail_next(429)                      # the next request gets "429 Too Many Requests"

It implements ``POST /v1/chat/completions`` only, listens on 127.0.0.1 on a free port, and reads the
question from the last user message: :data:`~uniil_lib.attributes.CLASS_PROMPT` with a class of the pool, or
:data:`~uniil_lib.attributes.DOMAIN_PROMPT` with a domain's description. Anything else gets HTTP 404 with a
message naming what it can answer. It is not a language model: it can only repeat the pool it was given.

The HTTP side is :class:`ChatServer`, the one OpenAI-compatible handler of the project: it speaks
``POST /v1/chat/completions`` on 127.0.0.1 in a daemon thread, records every request, and formats answers and
errors as OpenAI's API does; a subclass only decides the :class:`ChatReply` to each request. The tests'
scripted stub (``tests/openai_stub_server.py``) is another subclass.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping

from .attributes import CLASS_PROMPT, DOMAIN_DESCRIPTIONS, DOMAIN_PROMPT, AttributePool

HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class ChatReply:
    """One answer of a :class:`ChatServer`: an HTTP status, extra headers, and the assistant message content
    (for 200) or the error message (otherwise)."""

    status: int = 200
    content: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def attributes(cls, attributes: list) -> "ChatReply":
        """A well-formed JSON-mode reply ``{"attributes": [...]}``."""
        return cls(200, json.dumps({"attributes": attributes}))

    @classmethod
    def text(cls, content: str) -> "ChatReply":
        """A 200 reply with arbitrary content (e.g. a malformed one)."""
        return cls(200, content)

    @classmethod
    def error(cls, status: int, headers: Mapping[str, str] | None = None, message: str | None = None) -> "ChatReply":
        """An HTTP error in OpenAI's error format, e.g. ``ChatReply.error(429, {"Retry-After": "1"})``."""
        return cls(status, message, dict(headers or {}))


def completion_body(content: str | None, model: str, number: int) -> dict:
    """A ``chat.completion`` object as OpenAI's API returns it (``number`` makes its id)."""
    return {
        "id": f"chatcmpl-local-{number}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def error_body(message: str, kind: str) -> dict:
    """An error object as OpenAI's API returns it."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class ChatServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 (a free port), served from a daemon thread; a context
    manager. Subclasses implement :meth:`reply`.

    Attributes:
        requests: the JSON bodies received, in order.
        headers: their HTTP headers (lower-case names), in order.
    """

    error_type = "local_server"

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/v1"

    def reply(self, body: dict) -> ChatReply:
        """The answer to one request body (called under the server's lock, one request at a time)."""
        raise NotImplementedError(f"{type(self).__name__} must implement reply")

    def respond(self, path: str, raw: bytes, headers: Mapping[str, str]) -> tuple[int, dict, Mapping[str, str]]:
        """``(status, JSON payload, extra headers)`` for one HTTP POST."""
        if path != CHAT_PATH:
            return 404, error_body(f"only {CHAT_PATH} is served", self.error_type), {}
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as error:
            return 400, error_body(f"the request body is not JSON: {error}", self.error_type), {}
        with self._lock:
            self.requests.append(body)
            self.headers.append({name.lower(): value for name, value in headers.items()})
            answer = self.reply(body)
            number = len(self.requests)
        if answer.status == 200:
            return 200, completion_body(answer.content, body.get("model", ""), number), answer.headers
        message = answer.content or f"HTTP {answer.status}"
        return answer.status, error_body(message, self.error_type), answer.headers

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload, headers = server.respond(self.path, raw, dict(self.headers.items()))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # no access log in notebooks and tests
                pass

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PoolServer(ChatServer):
    """Serve ``pool`` as an OpenAI-compatible chat endpoint (see the module docstring); a context manager.

    Attributes:
        requests: the JSON bodies received, in order (to see what was asked, and that a cache hit asks nothing).
    """

    error_type = "pool_server"

    def __init__(self, pool: AttributePool):
        self.pool = pool
        self._failures: list[int] = []
        super().__init__()

    def fail_next(self, status: int, times: int = 1) -> None:
        """The next ``times`` requests get HTTP ``status`` (e.g. 429 or 503) instead of an answer."""
        with self._lock:
            self._failures.extend([status] * times)

    def answer(self, question: str) -> list[str] | None:
        """The pool's attributes for ``question`` (a class or domain prompt), or None if it asks for neither."""
        for name, attributes in self.pool.classes.items():
            if question == CLASS_PROMPT.format(name=name):
                return attributes
        for domain, attributes in self.pool.domains.items():
            description = self.pool.metadata.get("domain_descriptions", {}).get(domain) \
                or DOMAIN_DESCRIPTIONS.get(domain, domain)
            if question == DOMAIN_PROMPT.format(description=description):
                return attributes
        return None

    def reply(self, body: dict) -> ChatReply:
        if self._failures:
            status = self._failures.pop(0)
            return ChatReply.error(status, message=f"simulated HTTP {status}")
        messages = body.get("messages") or [{}]
        question = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        attributes = self.answer(question)
        if attributes is None:
            return ChatReply.error(404, message=f"this pool server only answers attribute questions about its "
                                                f"{len(self.pool.classes)} classes and {len(self.pool.domains)} "
                                                f"domains; got {question[:120]!r}")
        return ChatReply.attributes(attributes)
