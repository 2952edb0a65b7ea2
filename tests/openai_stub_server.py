"""A tiny OpenAI-compatible chat server for tests: scripted replies, recorded requests, 127.0.0.1 only.

    with StubOpenAI() as server:
        server.script(Reply.attributes(["pointed ears", "whiskers", "striped fur"]), Reply.error(429))
        client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        ...
        server.requests  # the JSON bodies received, in order
        server.headers   # their HTTP headers (lower-case names)

Each request takes the next scripted :class:`Reply`; when the script runs out the server answers HTTP 500 with
"no scripted reply left", so a runaway retry loop fails loudly instead of hanging. The HTTP side is the library's
own OpenAI-compatible handler (:class:`uniil_lib.llm_server.ChatServer`), the one the notebook's pool server uses.
"""

from __future__ import annotations

from collections import deque

from uniil_lib.llm_server import ChatReply as Reply
from uniil_lib.llm_server import ChatServer

__all__ = ["Reply", "StubOpenAI"]


class StubOpenAI(ChatServer):
    """Answers with the scripted replies, in order; use as a context manager (or call :meth:`close`)."""

    error_type = "stub_error"

    def __init__(self) -> None:
        self._queue: deque[Reply] = deque()
        super().__init__()

    def script(self, *replies: Reply) -> None:
        """Queue replies, answered in order."""
        with self._lock:
            self._queue.extend(replies)

    def reply(self, body: dict) -> Reply:
        return self._queue.popleft() if self._queue else Reply.error(500, message="no scripted reply left")
