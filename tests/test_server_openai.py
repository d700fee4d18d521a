"""What clients try first against `latr-sglang serve`: the OpenAI endpoints through the `openai` client,
streaming /generate, /tokenize and /detokenize, /metrics, the per-request log line."""

import json
import logging
import time

import openai
import pytest
import requests

from latr_sglang.server import ServerThread

KEY = "k-openai"


@pytest.fixture(scope="module")
def keyed(tiny_engine):
    with ServerThread(tiny_engine, api_key=KEY, served_model_name="tiny") as server:
        yield server


@pytest.fixture(scope="module")
def client(keyed):
    return openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def native(server, body):
    headers = {"Authorization": f"Bearer {KEY}"}
    return requests.post(server.url + "/generate", json=body, headers=headers, timeout=60).json()


def test_models(client, tiny_engine):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"]
    assert client.models.retrieve("tiny").max_model_len == tiny_engine.context_length


def test_completions_match_generate_and_stream_the_same_text(client, keyed, tiny_engine):
    prompt = "The capital of France"
    ids = tiny_engine.tokenizer(prompt).input_ids
    want = native(
        keyed,
        {"input_ids": ids, "sampling_params": {"max_new_tokens": 10, "temperature": 0, "ignore_eos": True}},
    )
    out = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=10, temperature=0, extra_body={"ignore_eos": True}, logprobs=2
    )
    choice = out.choices[0]
    assert choice.text == want["text"] and choice.finish_reason == "length"
    assert out.usage.prompt_tokens == len(ids) and out.usage.completion_tokens == 10
    # OpenAI keys the top log-probs by token text: two byte tokens that both print as U+FFFD share a key
    assert len(choice.logprobs.tokens) == 10 and all(1 <= len(t) <= 2 for t in choice.logprobs.top_logprobs)
    chunks = list(
        client.completions.create(
            model="tiny",
            prompt=prompt,
            max_tokens=10,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want["text"]
    assert chunks[-1].usage.completion_tokens == 10
    by_ids = client.completions.create(
        model="tiny", prompt=ids, max_tokens=10, temperature=0, extra_body={"ignore_eos": True}
    )
    assert by_ids.choices[0].text == want["text"]


def test_chat_completions_non_streaming_streaming_and_n(client, tiny_engine):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 3 + 4"}]
    out = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    text = out.choices[0].message.content
    assert out.object == "chat.completion" and out.choices[0].message.role == "assistant"
    assert len(out.choices[0].logprobs.content) == out.usage.completion_tokens
    assert all(len(e.top_logprobs) == 3 for e in out.choices[0].logprobs.content)
    prompt = tiny_engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert out.usage.prompt_tokens == len(tiny_engine.tokenizer(prompt, add_special_tokens=False).input_ids)
    stream = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=8, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason == out.choices[0].finish_reason
    many = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=6, n=3, seed=7, extra_body={"ignore_eos": True}
    )
    assert [c.index for c in many.choices] == [0, 1, 2] and many.usage.completion_tokens == 18
    again = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=6, n=3, seed=7, extra_body={"ignore_eos": True}
    )
    assert [c.message.content for c in again.choices] == [c.message.content for c in many.choices]


def test_openai_errors_are_the_clients_exceptions(client, keyed):
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="tiny", prompt="a", max_tokens=-1)
    with pytest.raises(openai.BadRequestError, match="n="):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a"}], n=0)
    wrong = openai.OpenAI(base_url=keyed.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def _stream_events(url, body):
    requests.post(url + "/flush_cache", timeout=60)  # each answer computed afresh: equal to the last bit
    r = requests.post(url + "/generate", json={**body, "stream": True}, stream=True, timeout=60)
    lines = [line[6:] for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize("incremental", [False, True], ids=["cumulative", "incremental"])
def test_generate_stream_at_an_interval_with_increments(tiny_engine, incremental):
    """--stream-interval and --incremental-streaming-output as SGLang's scheduler and tokenizer manager send
    them: the first token at once, then every interval tokens, the end always; increments add up to the
    answer (ids, log-probs, top log-probs, text)."""
    server = ServerThread(tiny_engine, stream_interval=3, incremental_streaming_output=incremental).start()
    try:
        body = {
            "text": "The capital of France",
            "sampling_params": {"max_new_tokens": 11, "temperature": 0, "ignore_eos": True},
            "return_logprob": True,
            "top_logprobs_num": 2,
        }
        requests.post(server.url + "/flush_cache", timeout=60)
        full = requests.post(server.url + "/generate", json=body, timeout=60).json()
        events = _stream_events(server.url, body)
        per_request = _stream_events(
            server.url, {**body, "sampling_params": {**body["sampling_params"], "stream_interval": 5}}
        )
    finally:
        server.stop()
    counts = [e["meta_info"]["completion_tokens"] for e in events]
    assert counts == [1, 4, 7, 10, 11]
    assert [e["meta_info"]["completion_tokens"] for e in per_request] == [1, 6, 11]
    assert [e["meta_info"]["finish_reason"] is None for e in events] == [True] * 4 + [False]
    meta = full["meta_info"]
    if incremental:
        assert [len(e["output_ids"]) for e in events] == [1, 3, 3, 3, 1]
        assert [t for e in events for t in e["output_ids"]] == full["output_ids"]
        for key in ("output_token_logprobs", "output_top_logprobs"):
            assert [x for e in events for x in e["meta_info"][key]] == meta[key]
        assert "".join(e["text"] for e in events) == full["text"]
    else:
        assert [len(e["output_ids"]) for e in events] == counts
        for e in events:
            n = len(e["output_ids"])
            assert e["output_ids"] == full["output_ids"][:n]
            assert e["meta_info"]["output_top_logprobs"] == meta["output_top_logprobs"][:n]
        assert events[-1]["text"] == full["text"]


def test_generate_stream_ends_with_the_non_streaming_answer(tiny_server):
    body = {
        "text": "The capital of France",
        "sampling_params": {"max_new_tokens": 8, "temperature": 0, "ignore_eos": True},
        "return_logprob": True,
        "rid": "s1",
    }
    full = requests.post(tiny_server.url + "/generate", json=body, timeout=60).json()
    r = requests.post(
        tiny_server.url + "/generate", json={**body, "stream": True, "rid": "s2"}, stream=True, timeout=60
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [
        line[len("data: ") :] for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")
    ]
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    # as SGLang's scheduler sends them: an event per token (stream interval 1) while the request goes on,
    # and for the last token only the final answer
    assert len(parsed) == 8
    assert [len(p["output_ids"]) for p in parsed[:-1]] == list(range(1, 8))
    assert all(p["meta_info"]["finish_reason"] is None for p in parsed[:-1])
    last = parsed[-1]
    assert last["output_ids"] == full["output_ids"] and last["text"] == full["text"]
    assert last["meta_info"]["id"] == "s2" and full["meta_info"]["id"] == "s1"
    assert len(last["meta_info"]["output_token_logprobs"]) == 8
    # each event carries the output log-probs so far (SGLang's cumulative stream)
    for p in parsed[:-1]:
        n = len(p["output_ids"])
        assert p["meta_info"]["output_token_logprobs"] == full["meta_info"]["output_token_logprobs"][:n]
        assert p["meta_info"]["completion_tokens"] == n
    batch = requests.post(
        tiny_server.url + "/generate",
        stream=True,
        timeout=60,
        json={
            "text": ["a", "b"],
            "sampling_params": {"max_new_tokens": 3, "ignore_eos": True},
            "stream": True,
        },
    )
    finals = [
        event
        for line in batch.iter_lines(decode_unicode=True)
        if line.startswith("data: {") and (event := json.loads(line[6:]))["meta_info"]["finish_reason"]
    ]
    assert sorted(f["index"] for f in finals) == [0, 1]


def test_tokenize_detokenize_round_trip(tiny_server, tiny_engine):
    r = requests.post(
        tiny_server.url + "/tokenize", json={"prompt": "The capital of France"}, timeout=10
    ).json()
    assert r["tokens"] == tiny_engine.tokenizer("The capital of France").input_ids
    assert r["count"] == len(r["tokens"]) and r["max_model_len"] == tiny_engine.context_length
    back = requests.post(tiny_server.url + "/detokenize", json={"tokens": r["tokens"]}, timeout=10).json()
    assert back["text"] == "The capital of France"
    many = requests.post(tiny_server.url + "/v1/tokenize", json={"prompt": ["a b", "c"]}, timeout=10).json()
    assert len(many["tokens"]) == 2 and many["count"] == [len(t) for t in many["tokens"]]
    texts = requests.post(tiny_server.url + "/detokenize", json={"tokens": many["tokens"]}, timeout=10).json()
    assert texts["text"] == ["a b", "c"]


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_metrics_count_requests_tokens_cache_hits_and_queue(tiny_server):
    before = requests.get(tiny_server.url + "/metrics", timeout=10).text
    body = {"input_ids": [9, 8, 7, 6, 5], "sampling_params": {"max_new_tokens": 4, "ignore_eos": True}}
    for _ in range(2):  # the second one finds the first one's prefix in the cache
        assert requests.post(tiny_server.url + "/generate", json=body, timeout=30).status_code == 200
    after = requests.get(tiny_server.url + "/metrics", timeout=10)
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    assert _metric(text, "sglang:num_requests_total") - _metric(before, "sglang:num_requests_total") == 2
    assert _metric(text, "sglang:prompt_tokens_total") - _metric(before, "sglang:prompt_tokens_total") == 10
    assert (
        _metric(text, "sglang:generation_tokens_total") - _metric(before, "sglang:generation_tokens_total")
        == 8
    )
    assert _metric(text, "sglang:cached_tokens_total") - _metric(before, "sglang:cached_tokens_total") >= 4
    assert _metric(text, "sglang:num_queue_reqs") == 0 and "sglang:num_running_reqs{" in text
    assert 'latr:http_requests_total{path="/generate",code="200"}' in text


def test_one_info_line_per_request(tiny_server, caplog):
    with caplog.at_level(logging.INFO, logger="latr_sglang.server"):
        requests.post(
            tiny_server.url + "/generate",
            timeout=30,
            json={"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 3, "ignore_eos": True}},
        )
        # the server logs the line once the response has gone out, so it may come just after the client
        # has its answer: wait for it (a missing line still fails, after 10 s)
        deadline = time.monotonic() + 10
        while True:
            lines = [r.getMessage() for r in caplog.records if r.name == "latr_sglang.server"]
            if any(line.startswith("POST /generate 200 in=3 out=3 ") for line in lines):
                break
            assert time.monotonic() < deadline, lines
            time.sleep(0.01)
