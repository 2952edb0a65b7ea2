"""The local pool server: the real openai client gets the pool's attributes through it, with retries and cache."""

from __future__ import annotations

import openai
import pytest

from uniil_lib.attributes import AttributeGenerator, AttributePool, generate_pool
from uniil_lib.llm_server import PoolServer

POOL = AttributePool({"cat face": ["pointed ears", "whiskers", "round eyes"]},
                     {"emoji-google": ["soft gradients", "round shapes", "bold outline"]}, {"source": "test"})


@pytest.fixture
def server():
    with PoolServer(POOL) as running:
        yield running


def test_generator_reads_the_pool_through_the_real_client(server, tmp_path):
    generator = AttributeGenerator(api_key="local", base_url=server.base_url, cache_dir=tmp_path)
    pool = generate_pool(generator, ["cat face"], ["emoji-google"])
    assert pool.classes == POOL.classes and pool.domains == POOL.domains
    assert len(server.requests) == 2
    generate_pool(generator, ["cat face"], ["emoji-google"])
    assert len(server.requests) == 2, "cached answers must not be asked again"


def test_a_429_is_retried_with_backoff(server, tmp_path):
    waits = []
    generator = AttributeGenerator(api_key="local", base_url=server.base_url, cache_dir=tmp_path,
                                   sleep=waits.append, base_delay=0.5)
    server.fail_next(429, times=2)
    assert generator.class_attributes("cat face") == POOL.classes["cat face"]
    assert len(server.requests) == 3 and waits == [0.5, 1.0]


def test_unknown_questions_get_a_404_that_says_what_is_served(server):
    client = openai.OpenAI(api_key="local", base_url=server.base_url, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="1 classes and 1 domains"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])


def test_the_handler_answers_other_paths_and_bad_bodies_in_openai_error_format(server):
    status, payload, _ = server.respond("/v1/embeddings", b"{}", {})
    assert status == 404 and payload["error"]["message"] == "only /v1/chat/completions is served"
    status, payload, _ = server.respond("/v1/chat/completions", b"{not json", {})
    assert status == 400 and payload["error"]["type"] == "pool_server" and "not JSON" in payload["error"]["message"]
    assert server.requests == [], "requests that are not chat completions are not recorded"


def test_the_test_stub_is_the_same_handler_with_scripted_replies():
    try:
        from .openai_stub_server import Reply, StubOpenAI
    except ImportError:
        from openai_stub_server import Reply, StubOpenAI
    from uniil_lib.llm_server import ChatServer

    with StubOpenAI() as stub:
        assert isinstance(stub, ChatServer)
        stub.script(Reply.attributes(["a", "b", "c"]))
        client = openai.OpenAI(api_key="test", base_url=stub.base_url, max_retries=0)
        answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
        assert answer.choices[0].message.content == '{"attributes": ["a", "b", "c"]}'
        with pytest.raises(openai.InternalServerError, match="no scripted reply left"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
        assert stub.headers[0]["authorization"] == "Bearer test"
