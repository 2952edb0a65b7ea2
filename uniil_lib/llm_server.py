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
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .attributes import CLASS_PROMPT, DOMAIN_DESCRIPTIONS, DOMAIN_PROMPT, AttributePool

HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"


class PoolServer:
    """Serve ``pool`` as an OpenAI-compatible chat endpoint (see the module docstring); a context manager.

    Attributes:
        requests: the JSON bodies received, in order (to see what was asked, and that a cache hit asks nothing).
    """

    def __init__(self, pool: AttributePool):
        self.pool = pool
        self.requests: list[dict] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/v1"

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

    def _respond(self, body: dict) -> tuple[int, dict]:
        with self._lock:
            self.requests.append(body)
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return failure, {"error": {"message": f"simulated HTTP {failure}", "type": "pool_server"}}
        messages = body.get("messages") or [{}]
        question = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        attributes = self.answer(question)
        if attributes is None:
            return 404, {"error": {"message": f"this pool server only answers attribute questions about its "
                                              f"{len(self.pool.classes)} classes and {len(self.pool.domains)} "
                                              f"domains; got {question[:120]!r}", "type": "pool_server"}}
        content = json.dumps({"attributes": attributes})
        return 200, {
            "id": f"chatcmpl-pool-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != CHAT_PATH:
                    status, payload = 404, {"error": {"message": f"only {CHAT_PATH} is served"}}
                else:
                    status, payload = server._respond(json.loads(raw or b"{}"))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # no access log in notebooks
                pass

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "PoolServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
