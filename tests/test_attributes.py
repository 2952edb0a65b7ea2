"""The attribute pool (uniil_lib.attributes): generation through the REAL openai client against a local stub
server (tests/openai_stub_server.py), retries, the disk cache, the no-key fallback, the shipped pool's
schema and coverage, and top-k matching.

The openai client runs with ``max_retries=0`` (as the library sets it), so every retry seen here is ours;
``sleep`` is a recorder, so no test waits.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from uniil_lib import attributes as A
from uniil_lib.attributes import (AttributeGenerationError, AttributeGenerator, AttributePool,
                                  MissingApiKeyError, MissingAttributesError, PoolFormatError)
from uniil_lib.data.offline import DIGIT_CLASSES, FASHION_MNIST_CLASSES
from repo_scripts import load_script

try:
    from .openai_stub_server import Reply
except ImportError:
    from openai_stub_server import Reply

GOOD = ["pointed ears", "long whiskers", "striped fur", "slit pupils", "long tail"]
OFFLINE_SCENARIOS = ("mtil-offline", "cil-emoji", "dil-emoji", "uniil-offline")


@pytest.fixture
def make_generator(openai_stub, tmp_path):
    """``make_generator(**overrides)`` -> (generator, list of sleeps) talking to the stub."""
    def make(**overrides):
        sleeps: list[float] = []
        options = dict(api_key="test", base_url=openai_stub.base_url, model="stub-model", sleep=sleeps.append,
                       cache_dir=tmp_path / "attr-cache", timeout=10)
        options.update(overrides)
        return AttributeGenerator(**options), sleeps
    return make


# ----------------------------------------------------------------------------------------------------------
# Generation through the real openai client


def test_success_parses_reply_and_sends_an_openai_request(openai_stub, make_generator):
    openai_stub.script(Reply.attributes([" pointed ears ", *GOOD[1:]]))
    generator, sleeps = make_generator()
    assert generator.class_attributes("cat face") == GOOD
    assert len(openai_stub.requests) == 1 and sleeps == []
    body = openai_stub.requests[0]
    assert body["model"] == "stub-model"
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0] == {"role": "system", "content": A.SYSTEM_PROMPT}
    assert body["messages"][1]["content"] == "What are useful features for distinguishing a cat face in a photo?"
    assert openai_stub.headers[0]["authorization"] == "Bearer test"


def test_domain_question_uses_the_domain_description(openai_stub, make_generator):
    openai_stub.script(Reply.attributes(["glossy 3d shading", "soft shadows", "smooth highlights"]))
    generator, _ = make_generator()
    assert generator.domain_attributes("emoji-fluent3d")[0] == "glossy 3d shading"
    assert A.DOMAIN_DESCRIPTIONS["emoji-fluent3d"] in openai_stub.requests[0]["messages"][1]["content"]


@pytest.mark.parametrize("bad", [
    "not json at all",                                  # not JSON
    json.dumps({"attrs": GOOD}),                        # wrong key
    json.dumps({"attributes": ["a"]}),                  # too few
    json.dumps({"attributes": ["x", "x", "y"]}),        # duplicates
    json.dumps({"attributes": ["ok a", " ", "b c"]}),   # a blank one
    json.dumps(["pointed ears", "whiskers", "tail"]),   # a bare list, not an object
])
def test_malformed_reply_is_asked_again_at_once(openai_stub, make_generator, bad):
    openai_stub.script(Reply.text(bad), Reply.attributes(GOOD))
    generator, sleeps = make_generator()
    assert generator.class_attributes("cat") == GOOD
    assert len(openai_stub.requests) == 2
    assert sleeps == []  # the server was fine; only the answer was bad


@pytest.mark.parametrize("content", [json.dumps({"attributes": GOOD}),
                                     "```json\n" + json.dumps({"attributes": GOOD}) + "\n```",
                                     json.dumps({"attributes": GOOD, "note": "extra keys are ignored"})])
def test_parse_attribute_reply_accepts_plain_and_fenced_json(content):
    assert A.parse_attribute_reply(content) == GOOD


def test_parse_attribute_reply_rejects_an_empty_reply():
    with pytest.raises(A.MalformedReplyError, match="not JSON"):
        A.parse_attribute_reply(None)


def test_persistently_malformed_replies_give_a_clear_error(openai_stub, make_generator):
    openai_stub.script(*[Reply.text("{not json")] * 5)
    generator, _ = make_generator(max_attempts=3)
    with pytest.raises(AttributeGenerationError, match=r"after 3 attempts.*malformed reply"):
        generator.class_attributes("cat")
    assert len(openai_stub.requests) == 3


def test_rate_limit_backs_off_with_increasing_delays(openai_stub, make_generator):
    openai_stub.script(Reply.error(429, {"Retry-After": "1"}), Reply.error(429, {"Retry-After": "1"}),
                  Reply.error(429), Reply.attributes(GOOD))
    generator, sleeps = make_generator(base_delay=1.0)
    assert generator.class_attributes("cat") == GOOD
    assert len(openai_stub.requests) == 4
    assert sleeps == [1.0, 2.0, 4.0]


def test_retry_after_longer_than_the_backoff_is_respected_and_capped(openai_stub, make_generator):
    openai_stub.script(Reply.error(429, {"Retry-After": "7"}), Reply.error(429, {"Retry-After": "3600"}),
                  Reply.attributes(GOOD))
    generator, sleeps = make_generator(base_delay=0.5, max_delay=30.0)
    assert generator.class_attributes("cat") == GOOD
    assert sleeps == [7.0, 30.0]


def test_persistent_server_error_gives_a_clear_error_after_n_tries(openai_stub, make_generator):
    openai_stub.script(*[Reply.error(500)] * 6)
    generator, sleeps = make_generator(max_attempts=4, base_delay=2.0)
    with pytest.raises(AttributeGenerationError, match=r"'stub-model'.*after 4 attempts.*HTTP 500"):
        generator.class_attributes("cat")
    assert len(openai_stub.requests) == 4
    assert sleeps == [2.0, 4.0, 8.0]  # no sleep after the last attempt


def test_a_503_then_a_good_reply_succeeds(openai_stub, make_generator):
    openai_stub.script(Reply.error(503), Reply.attributes(GOOD))
    generator, sleeps = make_generator()
    assert generator.class_attributes("cat") == GOOD
    assert sleeps == [1.0]


@pytest.mark.parametrize("status, hint", [(401, "OPENAI_API_KEY"), (404, "UNIIL_ATTRIBUTE_MODEL")])
def test_client_errors_fail_at_once_with_a_hint(openai_stub, make_generator, status, hint):
    openai_stub.script(Reply.error(status), Reply.attributes(GOOD))
    generator, sleeps = make_generator()
    with pytest.raises(AttributeGenerationError, match=rf"HTTP {status}.*{hint}"):
        generator.class_attributes("cat")
    assert len(openai_stub.requests) == 1 and sleeps == []


def test_unreachable_server_is_retried_then_reported(make_generator):
    generator, sleeps = make_generator(base_url="http://127.0.0.1:9/v1", max_attempts=2, timeout=2)
    with pytest.raises(AttributeGenerationError, match=r"after 2 attempts.*APIConnectionError"):
        generator.class_attributes("cat")
    assert sleeps == [1.0]


# ----------------------------------------------------------------------------------------------------------
# The cache


def test_second_identical_question_makes_no_request(openai_stub, make_generator):
    openai_stub.script(Reply.attributes(GOOD))
    first, _ = make_generator()
    assert first.class_attributes("cat") == GOOD
    second, _ = make_generator()  # a fresh generator (a later run) reads the same cache
    assert second.class_attributes("cat") == GOOD
    assert first.class_attributes("cat") == GOOD
    assert len(openai_stub.requests) == 1
    files = list(first.cache_dir.glob("*.json"))
    assert [f.stem for f in files] == [A.cache_key("stub-model", A.class_messages("cat"))]


def test_another_model_or_prompt_is_a_new_request(openai_stub, make_generator):
    openai_stub.script(Reply.attributes(GOOD), Reply.attributes(GOOD[::-1]), Reply.attributes(GOOD[:3]))
    generator, _ = make_generator()
    other_model, _ = make_generator(model="other-model")
    assert generator.class_attributes("cat") == GOOD
    assert other_model.class_attributes("cat") == GOOD[::-1]
    assert generator.class_attributes("dog") == GOOD[:3]
    assert [r["model"] for r in openai_stub.requests] == ["stub-model", "other-model", "stub-model"]


def test_default_cache_lives_under_the_cache_root(openai_stub, make_generator, isolated_cache):
    openai_stub.script(Reply.attributes(GOOD))
    generator, _ = make_generator(cache_dir=None)
    generator.class_attributes("cat")
    assert generator.cache_dir == isolated_cache / "attributes"
    assert len(list(generator.cache_dir.glob("*.json"))) == 1


def test_a_corrupt_cache_file_is_asked_again(openai_stub, make_generator):
    openai_stub.script(Reply.attributes(GOOD))
    generator, _ = make_generator()
    path = generator.cache_dir / f"{A.cache_key('stub-model', A.class_messages('cat'))}.json"
    path.parent.mkdir(parents=True)
    path.write_text("{broken")
    with pytest.warns(UserWarning, match="unreadable attribute cache"):
        assert generator.class_attributes("cat") == GOOD
    assert len(openai_stub.requests) == 1


def test_generate_pool_covers_classes_and_domains_with_metadata(openai_stub, make_generator):
    openai_stub.script(*[Reply.attributes(GOOD)] * 3)
    generator, _ = make_generator()
    pool = A.generate_pool(generator, ["cat", "dog", "cat"], ["emoji-google"])
    assert list(pool.classes) == ["cat", "dog"] and list(pool.domains) == ["emoji-google"]
    assert pool.metadata["model"] == "stub-model" and pool.metadata["class_prompt"] == A.CLASS_PROMPT
    assert len(openai_stub.requests) == 3


# ----------------------------------------------------------------------------------------------------------
# No key: the shipped pool


def test_no_key_uses_the_shipped_pool_with_a_clear_warning(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.warns(UserWarning, match=r"OPENAI_API_KEY is not set.*OPENAI_BASE_URL"):
        pool = A.attribute_pool(["cat", "trouser", "3"], ["emoji-google"])
    shipped = A.load_shipped_pool()
    assert pool.classes == {name: shipped.classes[name] for name in ("cat", "trouser", "3")}
    assert pool.domains == {"emoji-google": shipped.domains["emoji-google"]}
    assert "Claude" in pool.metadata["source"]


def test_no_key_and_a_class_the_shipped_pool_lacks(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MissingAttributesError, match=r"\['platypus'\].*\['watercolour'\].*OPENAI_API_KEY"):
            A.attribute_pool(["cat", "platypus"], ["watercolour"])


def test_with_a_key_attribute_pool_generates(openai_stub, monkeypatch, isolated_cache):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_stub.base_url)
    monkeypatch.setenv("UNIIL_ATTRIBUTE_MODEL", "env-model")
    openai_stub.script(Reply.attributes(GOOD))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        pool = A.attribute_pool(["cat"], sleep=lambda s: None)
    assert pool.classes == {"cat": GOOD} and openai_stub.requests[0]["model"] == "env-model"


def test_generator_without_a_key_says_which_variable_to_set(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingApiKeyError, match=r"OPENAI_API_KEY.*OPENAI_BASE_URL"):
        AttributeGenerator()


# ----------------------------------------------------------------------------------------------------------
# Pool files and the schema


def test_pool_round_trips_through_json(tmp_path):
    pool = AttributePool({"cat": GOOD}, {"emoji-google": GOOD[:3]}, {"source": "test"})
    path = pool.save(tmp_path / "pool.json")
    assert AttributePool.load(path) == pool
    assert json.loads(path.read_text())["format"] == A.POOL_FORMAT


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["classes"].update(cat=["only", "two"]), "too short|should be non-empty"),
    (lambda d: d["classes"].update(cat=["a b", "", "c d"]), "classes/cat/1"),
    (lambda d: d["classes"].update(cat=["a b", "a b", "c d"]), "non-unique"),
    (lambda d: d["classes"].update(cat=["a b", 3, "c d"]), "not of type 'string'"),
    (lambda d: d["classes"].update(cat=[f"attribute {i}" for i in range(11)]), "too long|is too long"),
    (lambda d: d["domains"].update(x=["a b", "c d", "e" * 81]), "domains/x/2"),
    (lambda d: d.pop("metadata"), "metadata"),
    (lambda d: d.update(format="something else"), "format"),
])
def test_schema_rejects_bad_pools(mutate, expected):
    data = AttributePool({"cat": GOOD}, {"emoji-google": GOOD[:3]}, {}).to_dict()
    mutate(data)
    with pytest.raises(PoolFormatError, match=expected):
        AttributePool.from_dict(data)


def test_save_refuses_an_invalid_pool(tmp_path):
    with pytest.raises(PoolFormatError):
        AttributePool({"cat": ["one"]}, {}, {}).save(tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_pool_for_reports_every_missing_name():
    pool = AttributePool({"cat": GOOD, "dog": GOOD}, {"emoji-google": GOOD}, {})
    sub = pool.pool_for(["dog", "cat", "dog"], ["emoji-google"])
    assert list(sub.classes) == ["dog", "cat"]
    with pytest.raises(MissingAttributesError, match=r"2 classes \['eel', 'owl'\] and 1 domains \['sketch'\]"):
        pool.pool_for(["cat", "eel", "owl"], ["sketch", "emoji-google"])


def test_vocabulary_lists_each_attribute_once_in_pool_order():
    pool = AttributePool({"a": ["x y", "z w", "q r"], "b": ["z w", "s t", "u v"]}, {"d": ["x y", "n m", "o p"]}, {})
    assert pool.vocabulary() == ["x y", "z w", "q r", "s t", "u v", "n m", "o p"]


# ----------------------------------------------------------------------------------------------------------
# The shipped pool


def test_shipped_pool_follows_the_schema_and_the_prompt():
    raw = json.loads(A.SHIPPED_POOL_PATH.read_text(encoding="utf-8"))
    assert A.schema_errors(raw, A.pool_schema()) == []
    pool = A.load_shipped_pool()
    meta = pool.metadata
    assert "Claude" in meta["source"] and "NOT fetched through an API" in meta["source"]
    assert (meta["system_prompt"], meta["class_prompt"], meta["domain_prompt"]) == (
        A.SYSTEM_PROMPT, A.CLASS_PROMPT, A.DOMAIN_PROMPT)
    assert meta["date"] and meta["domain_descriptions"] == dict(A.DOMAIN_DESCRIPTIONS)
    for name, attributes in [*pool.classes.items(), *pool.domains.items()]:
        assert 5 <= len(attributes) <= 8, f"{name}: {len(attributes)} attributes, the prompt asks for 5 to 8"
        for attribute in attributes:  # the prompt's form: lowercase noun phrases of 2 to 6 words
            assert attribute == attribute.lower() and 2 <= len(attribute.split()) <= 6, f"{name}: {attribute!r}"
            assert name not in attribute.split() and name != attribute, f"{name}: {attribute!r} repeats the name"


def test_shipped_pool_covers_the_offline_classes_and_domains_without_data():
    pool = A.load_shipped_pool()
    assert pool.missing([*FASHION_MNIST_CLASSES, *DIGIT_CLASSES], A.DOMAIN_DESCRIPTIONS) == ([], [])
    assert len(pool.classes) == 120 and len(pool.domains) == 7


def test_shipped_pool_covers_every_offline_named_scenario():
    from uniil_lib.named_scenarios import build_scenario

    lacking = {}
    for name in OFFLINE_SCENARIOS:
        try:
            scenario = build_scenario(name, profile="fast")
        except FileNotFoundError as error:  # DatasetNotFoundError included
            pytest.skip(f"data for {name} is not on disk: {error}")
        classes, domains = A.scenario_vocabulary(scenario)
        missing = A.load_shipped_pool().missing(classes, domains)
        if missing != ([], []):
            lacking[name] = missing
    assert lacking == {}, f"the shipped pool lacks (classes, domains): {lacking}"


# ----------------------------------------------------------------------------------------------------------
# Matching


def test_match_attributes_top_k_on_hand_built_features():
    keys = torch.eye(4)  # attribute a points along axis a
    images = torch.tensor([[0.0, 3.0, 1.0, 0.0],    # closest to 1, then 2
                           [-1.0, 0.0, 0.0, 0.5],   # closest to 3, then 1 or 2 (0), never 0 (negative)
                           [2.0, 0.0, 0.0, 1.9]])   # 0 just before 3
    indices, scores = A.match_attributes(images, keys, k=2)
    assert indices.shape == scores.shape == (3, 2)
    assert indices[0].tolist() == [1, 2] and indices[2].tolist() == [0, 3] and indices[1, 0].item() == 3
    expected = torch.nn.functional.normalize(images, dim=-1)[0, [1, 2]]
    torch.testing.assert_close(scores[0], expected)
    assert (scores[:, 0] >= scores[:, 1]).all()


def test_matched_attributes_returns_the_strings():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    texts = ["striped fur", "glossy shading", "both"]
    assert A.matched_attributes(torch.tensor([[1.0, 0.1], [0.0, 2.0]]), keys, texts, k=2) == [
        ["striped fur", "both"], ["glossy shading", "both"]]


@pytest.mark.parametrize("images, keys, k, message", [
    (torch.ones(2, 4), torch.ones(3, 5), 1, "widths differ"),
    (torch.ones(4), torch.ones(3, 4), 1, "need \\(B, D\\)"),
    (torch.ones(2, 4), torch.ones(3, 4), 4, "k must be between 1 and"),
    (torch.ones(2, 4), torch.ones(3, 4), 0, "k must be between 1 and"),
])
def test_match_attributes_rejects_bad_shapes(images, keys, k, message):
    with pytest.raises(ValueError, match=message):
        A.match_attributes(images, keys, k)


def test_embed_attributes_with_a_tiny_clip():
    from uniil_lib.clip import load_clip

    clip = load_clip("tiny", seed=0)
    pool = AttributePool({"cat": ["pointed ears", "long whiskers", "soft fur"]}, {"d": ["soft fur", "flat colors",
                                                                                         "no outlines"]}, {})
    embeddings = A.embed_attributes(clip, pool, batch_size=2)
    assert embeddings.shape == (5, 64), "one row per distinct attribute of pool.vocabulary()"
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(5))
    plain = A.embed_attributes(clip, pool.vocabulary(), template="{}")
    expected = torch.nn.functional.normalize(clip.encode_texts(pool.vocabulary()), dim=-1)
    torch.testing.assert_close(plain, expected)
    assert not torch.allclose(plain, embeddings), "the template must change the embedding"
    with pytest.raises(ValueError, match="exactly one"):
        A.embed_attributes(clip, pool, template="no slot")


# ----------------------------------------------------------------------------------------------------------
# data_scripts/generate_attribute_pool.py


def _script():
    return load_script("data_scripts/generate_attribute_pool.py")


def test_script_writes_a_valid_pool(openai_stub, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    openai_stub.script(*[Reply.attributes(GOOD)] * 3)
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("# pets\ncat\n\ndog\n")
    out = tmp_path / "pool.json"
    code = _script().main(["--classes-file", str(classes_file), "--domains", "emoji-google", "--out", str(out),
                           "--base-url", openai_stub.base_url, "--model", "script-model"])
    assert code == 0, capsys.readouterr().err
    pool = AttributePool.load(out)
    assert list(pool.classes) == ["cat", "dog"] and list(pool.domains) == ["emoji-google"]
    assert pool.metadata["model"] == "script-model" and len(openai_stub.requests) == 3


def test_script_without_a_key_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert _script().main(["--classes", "cat,dog", "--out", str(tmp_path / "p.json")]) == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_script_reports_a_failing_server(openai_stub, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setattr(A.time, "sleep", lambda seconds: None)
    openai_stub.script(*[Reply.error(500)] * 2)
    code = _script().main(["--classes", "cat", "--out", str(tmp_path / "p.json"), "--base-url", openai_stub.base_url,
                           "--max-attempts", "2"])
    assert code == 1 and "after 2 attempts" in capsys.readouterr().err


def test_script_parses_lists_and_descriptions():
    script = _script()
    assert script.split_list(" a, b,,c ") == ["a", "b", "c"]
    assert script.parse_descriptions(["emoji-foo=64x64 emoji = Foo"]) == {"emoji-foo": "64x64 emoji = Foo"}
    with pytest.raises(ValueError, match="DOMAIN=TEXT"):
        script.parse_descriptions(["no-equals"])
