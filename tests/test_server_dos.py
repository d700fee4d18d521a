"""`latr-sglang serve` against malformed bodies and denial of service: a 400 naming the field on every
endpoint, a 500 that keeps the connection, temperatures that underflow, clients that leave, big bodies, long
texts, and a shutdown under load that takes seconds."""

import concurrent.futures
import http.client
import json
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests
from server_helpers import free_port, serve_command

from latr_sglang.server import ServerThread

GEN = {"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 2}}
# (path, raw body, a word the 400 message must contain)
MALFORMED = [
    ("/generate", b'{"input_ids": [1], "sampling_params": {"max_new_tokens": 1e400}}', "max_new_tokens"),
    ("/generate", b'{"input_ids": [1], "sampling_params": {"max_new_tokens": true}}', "max_new_tokens"),
    ("/generate", b'{"input_ids": [1], "sampling_params": {"max_new_tokens": 2.5}}', "max_new_tokens"),
    ("/generate", b'{"input_ids": [1], "sampling_params": {"top_k": true}}', "top_k"),
    ("/generate", b'{"input_ids": [1], "sampling_params": {"min_new_tokens": false}}', "min_new_tokens"),
    ("/generate", b'{"input_ids": [1], "sampling_params": {"temperature": NaN}}', "temperature"),
    ("/generate", b'{"input_ids": [1], "sampling_params": {"temperature": Infinity}}', "temperature"),
    ("/generate", b'{"input_ids": [1], "sampling_params": {"temperature": 1e400}}', "temperature"),
    ("/generate", b'{"input_ids": [1], "sampling_params": {"top_p": "0.5"}}', "top_p"),
    ("/generate", b'{"input_ids": [1], "sampling_params": {"sampling_seed": 1e400}}', "sampling_seed"),
    (
        "/generate",
        b'{"input_ids": [1], "sampling_params": {"sampling_seed": 99999999999999999999999}}',
        "sampling_seed",
    ),
    ("/generate", b'{"input_ids": [1], "sampling_params": {"ignore_eos": "no"}}', "ignore_eos"),
    ("/generate", b'{"input_ids": [1], "sampling_params": {"stop_token_ids": [true]}}', "stop_token_ids"),
    (
        "/generate",
        b'{"input_ids": [1], "sampling_params": {"skip_special_tokens": 3}}',
        "skip_special_tokens",
    ),
    (
        "/generate",
        b'{"input_ids": [1], "return_logprob": true, "top_logprobs_num": 1e400}',
        "top_logprobs_num",
    ),
    (
        "/generate",
        b'{"input_ids": [1], "return_logprob": true, "top_logprobs_num": true}',
        "top_logprobs_num",
    ),
    (
        "/generate",
        b'{"input_ids": [1, 2], "return_logprob": true, "logprob_start_len": 1e400}',
        "logprob_start_len",
    ),
    ("/generate", b'{"input_ids": [1], "return_logprob": "yes"}', "return_logprob"),
    ("/generate", b'{"input_ids": [true, 2]}', "input_ids"),
    ("/generate", b'{"input_ids": [1.0, 2]}', "input_ids"),
    ("/generate", b'{"input_ids": [[1], [[2]]]}', "input_ids"),
    ("/generate", b'{"input_ids": [[]]}', "input_ids"),
    ("/generate", b'{"input_ids": 5}', "input_ids"),
    ("/generate", b'{"input_ids": [' + b"1," * 3_000_000 + b"1]}", "context length"),
    (
        "/generate",
        b'{"input_ids": [[1]], "sampling_params": {"stop": ["x"]}}'.replace(
            b"[[1]]", b"[" + b"[1]," * 20000 + b"[1]]"
        ),
        "at most",
    ),
    ("/generate", b'{"input_ids": [1], "sampling_params": {"stop": ["' + b"x" * 600 + b'"]}}', "stop"),
    ("/v1/completions", b'{"prompt": [' + b'"a",' * 300 + b'"a"], "n": 64}', "choices"),
    ("/generate", b'{"text": ""}', "text"),
    ("/generate", b'{"text": 5}', "text"),
    ("/generate", b'{"text": "a", "rid": 5}', "rid"),
    ("/generate", b'{"input_ids": [1], "stream": 1}', "stream"),
    ("/generate", b"[" * 100000 + b"]" * 100000, "JSON"),
    ("/generate", b"\xff\xfe\x00", "JSON"),
    ("/generate", b'"just a string"', "JSON object"),
    ("/generate", b"", "empty"),
    ("/tokenize", b'{"prompt": 5}', "prompt"),
    ("/tokenize", b'{"prompt": "a", "add_special_tokens": 1}', "add_special_tokens"),
    ("/tokenize", b'{"prompt": "a", "bogus": 1}', "bogus"),
    ("/detokenize", b'{"tokens": [1e400]}', "tokens"),
    ("/detokenize", b'{"tokens": [true]}', "tokens"),
    ("/detokenize", b'{"tokens": [-1]}', "tokens"),
    ("/detokenize", b'{"tokens": [10000000]}', "tokens"),
    ("/detokenize", b'{"tokens": "abc"}', "tokens"),
    ("/abort_request", b'{"rid": 5}', "rid"),
    ("/abort_request", b'{"abort_all": "yes"}', "abort_all"),
    ("/abort_request", b"{}", "rid"),
    ("/v1/completions", b'{"prompt": "a", "max_tokens": 1e400}', "max_tokens"),
    ("/v1/completions", b'{"prompt": "a", "max_tokens": true}', "max_tokens"),
    ("/v1/completions", b'{"prompt": "a", "n": 0}', "n"),
    ("/v1/completions", b'{"prompt": "a", "n": 100000}', "n"),
    ("/v1/completions", b'{"prompt": "a", "logprobs": 1e400}', "logprobs"),
    ("/v1/completions", b'{"prompt": "a", "temperature": "hot"}', "temperature"),
    ("/v1/completions", b'{"prompt": "a", "seed": 1.5}', "seed"),
    ("/v1/completions", b'{"prompt": "a", "stop": [1]}', "stop"),
    ("/v1/completions", b'{"prompt": "a", "echo": true}', "echo"),
    ("/v1/completions", b'{"prompt": "a", "frequency_penalty": 1.0}', "frequency_penalty"),
    ("/v1/completions", b'{"prompt": [1, "a"]}', "prompt"),
    ("/v1/completions", b'{"prompt": []}', "prompt"),
    ("/v1/completions", b'{"prompt": "a", "stream_options": 5}', "stream_options"),
    ("/v1/completions", b'{"prompt": "a", "unknown_thing": 5}', "unknown_thing"),
    ("/v1/chat/completions", b'{"messages": "hi"}', "messages"),
    ("/v1/chat/completions", b'{"messages": [{"role": "wizard", "content": "x"}]}', "role"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": 5}]}', "content"),
    (
        "/v1/chat/completions",
        b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
        "content",
    ),
    (
        "/v1/chat/completions",
        b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1e400}',
        "max_tokens",
    ),
    (
        "/v1/chat/completions",
        b'{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}',
        "top_logprobs",
    ),
    (
        "/v1/chat/completions",
        b'{"messages": [{"role": "user", "content": "x"}], "tools": [{"a": 1}]}',
        "tools",
    ),
    ("/v1/chat/completions", b"{bad json", "JSON"),
]


@pytest.mark.parametrize(("path", "raw", "needle"), MALFORMED)
def test_malformed_bodies_get_a_400_naming_the_field(tiny_server, path, raw, needle):
    r = requests.post(tiny_server.url + path, data=raw, timeout=30)
    assert r.status_code == 400, r.text[:300]
    error = r.json()["error"]
    assert needle in error["message"] and error["code"] == 400, error
    assert requests.post(tiny_server.url + "/generate", json=GEN, timeout=30).status_code == 200


def test_unknown_paths_and_methods_answer_in_the_same_json_shape(tiny_server):
    for method, path, status in [
        ("GET", "/nope", 404),
        ("POST", "/v2/anything", 404),
        ("DELETE", "/generate", 405),
    ]:
        r = requests.request(method, tiny_server.url + path, timeout=10)
        assert r.status_code == status and r.json()["error"]["code"] == status
        assert path in r.json()["error"]["message"]


def test_a_500_answers_json_and_keeps_the_connection(tiny_server, tiny_engine, monkeypatch):
    """A fault injected into the real engine (its cache flush raises): the client gets a JSON 500, and its
    next request on the same keep-alive connection is answered."""

    async def broken_flush():
        raise RuntimeError("injected fault")

    monkeypatch.setattr(tiny_engine, "flush_cache", broken_flush)
    conn = http.client.HTTPConnection("127.0.0.1", tiny_server.port, timeout=30)
    conn.request("POST", "/flush_cache")
    first = conn.getresponse()
    body = json.loads(first.read())
    assert first.status == 500 and "injected fault" in body["error"]["message"]
    sock = conn.sock
    assert sock is not None and first.getheader("connection") != "close"
    conn.request("POST", "/generate", body=json.dumps(GEN), headers={"Content-Type": "application/json"})
    second = conn.getresponse()
    assert second.status == 200 and json.loads(second.read())["output_ids"]
    assert conn.sock is sock  # the same connection
    conn.close()


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-30, 1e-7])
def test_underflowing_temperatures_are_greedy(tiny_server, temperature):
    body = {
        "input_ids": [5, 6, 7],
        "sampling_params": {"max_new_tokens": 12, "ignore_eos": True},
        "return_logprob": True,
    }
    greedy = requests.post(
        tiny_server.url + "/generate",
        json={**body, "sampling_params": {**body["sampling_params"], "temperature": 0}},
        timeout=30,
    ).json()
    tiny = requests.post(
        tiny_server.url + "/generate",
        json={
            **body,
            "sampling_params": {**body["sampling_params"], "temperature": temperature, "sampling_seed": 3},
        },
        timeout=30,
    )
    assert tiny.status_code == 200
    assert tiny.json()["output_ids"] == greedy["output_ids"]
    lps = [e[0] for e in tiny.json()["meta_info"]["output_token_logprobs"]]
    assert all(lp == lp and lp <= 0 for lp in lps)  # finite log-probs, no NaN


def _engine_idle(engine, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.load() == {"running": 0, "waiting": 0}:
            return True
        time.sleep(0.05)
    return False


def _raw_post(port: int, path: str, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(data)}\r\n\r\n"
    sock.sendall(head.encode() + data)
    return sock


LONG = {"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 2000, "ignore_eos": True}}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate", LONG),
        ("/generate", {**LONG, "stream": True}),
        ("/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 2000, "ignore_eos": True}),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2000,
                "ignore_eos": True,
                "stream": True,
            },
        ),
    ],
)
def test_a_client_that_disconnects_cancels_its_generation(tiny_server, tiny_engine, path, body):
    assert _engine_idle(tiny_engine)
    sock = _raw_post(tiny_server.port, path, body)
    deadline = time.monotonic() + 10
    while tiny_engine.load()["running"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tiny_engine.load()["running"] == 1
    decoded = tiny_engine.stats["decode_tokens"]
    sock.close()
    assert _engine_idle(tiny_engine, 3.0), tiny_engine.load()
    assert tiny_engine.stats["decode_tokens"] - decoded < 1900  # stopped well before max_new_tokens


def test_abort_request_by_rid_ends_a_generation_with_abort(tiny_server, tiny_engine):
    result = {}
    body = {**LONG, "rid": "long-one"}
    thread = threading.Thread(
        target=lambda: result.update(r=requests.post(tiny_server.url + "/generate", json=body, timeout=60))
    )
    thread.start()
    deadline = time.monotonic() + 10
    while tiny_engine.load()["running"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    r = requests.post(tiny_server.url + "/abort_request", json={"rid": "long-one"}, timeout=10)
    assert r.status_code == 200
    thread.join(10)
    meta = result["r"].json()["meta_info"]
    assert meta["id"] == "long-one" and meta["finish_reason"]["type"] == "abort"
    assert meta["completion_tokens"] < 2000


def test_body_size_limit(tiny_engine):
    with ServerThread(tiny_engine, max_body_mb=1) as server:
        big = b'{"text": "' + b"a" * (2 * 2**20) + b'"}'
        r = requests.post(server.url + "/generate", data=big, timeout=30)
        assert r.status_code == 413 and "limit" in r.json()["error"]["message"]

        def chunks():  # no Content-Length: the limit applies while the body streams in
            for _ in range(40):
                yield b"a" * 65536

        r = requests.post(server.url + "/generate", data=chunks(), timeout=30)
        assert r.status_code == 413
        assert requests.post(server.url + "/generate", json=GEN, timeout=30).status_code == 200


@pytest.mark.parametrize("path", ["/generate", "/tokenize", "/v1/completions"])
def test_a_10mb_text_does_not_block_health(tiny_server, path):
    text = "hello world " * (10 * 2**20 // 12)
    key = "text" if path == "/generate" else "prompt"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(requests.post, tiny_server.url + path, json={key: text}, timeout=120)
        worst = 0.0
        while not future.done():
            t0 = time.monotonic()
            assert requests.get(tiny_server.url + "/health", timeout=10).status_code == 200
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.05)
        r = future.result()
    assert worst < 1.0
    assert (
        r.status_code == 400
        and key in r.json()["error"]["message"]
        and "context" in r.json()["error"]["message"]
    )


def test_long_text_is_tokenized_off_the_event_loop(tiny_server, tiny_engine):
    """A text just under the refusal bound takes real tokenizer time: /health answers meanwhile."""
    from latr_sglang.server.generation import max_text_chars

    text = "7 " * (max_text_chars(tiny_engine) // 2 - 8)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(requests.post, tiny_server.url + "/tokenize", json={"prompt": text}, timeout=120)
        worst = 0.0
        while not future.done():
            t0 = time.monotonic()
            requests.get(tiny_server.url + "/health", timeout=10)
            worst = max(worst, time.monotonic() - t0)
        r = future.result()
    assert r.status_code == 200 and r.json()["count"] > 1000
    assert worst < 1.0


def test_serve_busy_port_is_one_line_and_shutdown_under_load_takes_seconds(tiny_model_dir, tmp_path):
    """`latr-sglang serve` as a user runs it: a busy port is a one-line error before the model loads; under
    load, SIGTERM ends the process within the shutdown timeout and a few seconds."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        cmd = serve_command(tiny_model_dir, port)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "serving" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(port) in lines[0] and "in use" in lines[0], proc.stderr
    assert time.monotonic() - t0 < 60

    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        serve_command(tiny_model_dir, port, "--shutdown-timeout", "1"), stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # the port is bound before the model loads: reads wait
                pass
            assert time.monotonic() < deadline and server.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        socks = [_raw_post(port, "/generate", LONG) for _ in range(8)]
        time.sleep(1.0)
        t0 = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        assert time.monotonic() - t0 < 8
        for s in socks:
            s.close()
    finally:
        if server.poll() is None:
            server.kill()
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in text, text[-2000:]
    assert "POST /generate" in text  # the per-request log line


@pytest.mark.parametrize(
    ("path", "raw", "param"),
    [
        ("/generate", b'{"text": "a\\ud800b", "sampling_params": {"max_new_tokens": 2}}', "text"),
        ("/generate", b'{"text": ["ok", "a\\udc00"], "sampling_params": {"max_new_tokens": 2}}', "text[1]"),
        ("/v1/completions", b'{"prompt": "a\\ud800b", "max_tokens": 2}', "prompt"),
        ("/v1/completions", b'{"prompt": "a\\ud800b", "max_tokens": 2, "stream": true}', "prompt"),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "a\\ud800b"}], "max_tokens": 2}',
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"x": "\\ud800"}}',
            "chat_template_kwargs.x",
        ),
        ("/tokenize", b'{"prompt": "a\\ud800b"}', "prompt"),
    ],
)
def test_lone_surrogates_get_a_400_naming_the_field(tiny_server, path, raw, param):
    """JSON may escape half a surrogate pair; a tokenizer cannot encode it (a TypeError deep inside, which
    was a 500)."""
    headers = {"Content-Type": "application/json"}
    r = requests.post(tiny_server.url + path, data=raw, headers=headers, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and "lone surrogate at" in error["message"], error
    assert requests.post(tiny_server.url + "/generate", json=GEN, timeout=30).status_code == 200
