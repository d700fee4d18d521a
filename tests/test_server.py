"""The HTTP server and the SGLang HTTP engine, real on both ends (uvicorn on 127.0.0.1)."""

import asyncio
import concurrent.futures
import random
import subprocess
import time

import pytest
import requests
from server_helpers import free_port, join_weight_group, serve_command, weight_group_body

from latr_sglang.engines.base import GenerateRequest, RequestError, SamplingParams
from latr_sglang.engines.sglang_http import SGLangHTTPEngine

GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0, ignore_eos=True)


def post(server, body, timeout=60):
    return requests.post(server.url + "/generate", json=body, timeout=timeout)


def test_info_and_health_endpoints(tiny_server):
    info = requests.get(tiny_server.url + "/get_model_info", timeout=10).json()
    assert info["is_generation"] is True and info["model_path"]
    server_info = requests.get(tiny_server.url + "/get_server_info", timeout=10).json()
    assert server_info["context_length"] == 2048
    assert requests.get(tiny_server.url + "/health", timeout=10).status_code == 200
    assert requests.get(tiny_server.url + "/health_generate", timeout=30).status_code == 200
    assert requests.post(tiny_server.url + "/flush_cache", timeout=10).status_code == 200


def test_generate_single_batch_and_text(tiny_server, prompt_ids):
    single = post(
        tiny_server,
        {
            "input_ids": list(prompt_ids[0]),
            "sampling_params": {"max_new_tokens": 5, "temperature": 0},
            "return_logprob": True,
            "top_logprobs_num": 2,
        },
    ).json()
    meta = single["meta_info"]
    assert len(single["output_ids"]) == len(meta["output_token_logprobs"]) == len(meta["output_top_logprobs"])
    assert meta["prompt_tokens"] == len(prompt_ids[0]) and meta["completion_tokens"] == len(
        single["output_ids"]
    )
    assert all(len(pos) == 2 for pos in meta["output_top_logprobs"])
    batch = post(
        tiny_server,
        {
            "input_ids": [list(p) for p in prompt_ids[:3]],
            "sampling_params": {"max_new_tokens": 4, "temperature": 0},
        },
    ).json()
    assert isinstance(batch, list) and len(batch) == 3
    assert batch[0]["output_ids"][:4] == single["output_ids"][:4]
    text = post(
        tiny_server, {"text": "The capital of France", "sampling_params": {"max_new_tokens": 3}}
    ).json()
    assert text["meta_info"]["prompt_tokens"] == len(prompt_ids[1]) and isinstance(text["text"], str)
    per_item = post(
        tiny_server, {"text": ["a", "b"], "sampling_params": [{"max_new_tokens": 1}, {"max_new_tokens": 3}]}
    ).json()
    assert [r["meta_info"]["completion_tokens"] <= m for r, m in zip(per_item, [1, 3])] == [True, True]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"input_ids": []}, "input_ids"),
        ({"input_ids": [1, 99999]}, "99999"),
        ({"input_ids": [1, "x"]}, "'x'"),
        ({"input_ids": [1], "sampling_params": {"max_new_tokens": -3}}, "max_new_tokens"),
        ({"input_ids": [1], "sampling_params": {"max_new_tokens": 10**12}}, "max_new_tokens"),
        ({"input_ids": [1] * 5000}, "context length"),
        ({"input_ids": [1], "sampling_params": {"temprature": 0.5}}, "temprature"),
        ({"input_ids": [1], "sampling_params": {"top_k": 0}}, "top_k"),
        ({"text": "a", "input_ids": [1]}, "exactly one"),
        ({}, "exactly one"),
        ({"input_ids": [1], "stream": "yes"}, "stream"),
        ({"input_ids": [1], "image_data": "x.png"}, "image_data"),
        ({"input_ids": [[1], [2]], "sampling_params": [{}, {}, {}]}, "sampling_params"),
        ([1, 2, 3], "JSON object"),
    ],
)
def test_bad_requests_get_a_400_naming_the_field_and_the_server_keeps_serving(tiny_server, body, needle):
    resp = post(tiny_server, body)
    assert resp.status_code == 400, resp.text
    assert needle in resp.json()["error"]["message"]
    ok = post(tiny_server, {"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 1}})
    assert ok.status_code == 200


def test_invalid_json_gets_a_400(tiny_server):
    resp = requests.post(tiny_server.url + "/generate", data=b"{not json", timeout=10)
    assert resp.status_code == 400 and "JSON" in resp.json()["error"]["message"]


def test_32_concurrent_clients_lose_no_request(tiny_server, tiny_engine):
    rng = random.Random(0)
    vocab = tiny_engine.vocab_size

    def client(i):
        results = []
        deadline = time.monotonic() + 20
        for j in range(3):
            if time.monotonic() > deadline:
                break
            ids = [rng.randrange(vocab) for _ in range(rng.randrange(1, 20))]
            n = rng.randrange(1, 12)
            r = post(
                tiny_server,
                {
                    "input_ids": ids,
                    "sampling_params": {"max_new_tokens": n, "ignore_eos": True, "sampling_seed": i * 10 + j},
                },
            )
            results.append((r.status_code, len(r.json().get("output_ids", [])), n))
        return results

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        all_results = [r for rs in pool.map(client, range(32)) for r in rs]
    # every request sent got its full answer (the deadline only stops clients from sending more)
    assert len(all_results) >= 32
    assert all(status == 200 and got == want for status, got, want in all_results)


def test_http_engine_matches_in_process_engine(tiny_server, tiny_engine, prompt_ids):
    reqs = [GenerateRequest(p, GREEDY, top_logprobs_num=3) for p in prompt_ids]

    async def main():
        http = SGLangHTTPEngine(tiny_server.url)
        try:
            remote = await http.generate(reqs)
            with pytest.raises(RequestError, match="input_ids"):
                await http.generate([GenerateRequest((1, 10**6), GREEDY)])
            await http.flush_cache()
            return remote
        finally:
            await http.close()

    remote = asyncio.run(main())
    local = tiny_engine.generate_sync(reqs)
    for a, b in zip(remote, local):
        assert a.output_ids == b.output_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)  # fp32: cached vs fresh prefill
        assert [[t for t, _ in pos] for pos in a.top_logprobs] == [
            [t for t, _ in pos] for pos in b.top_logprobs
        ]
        assert a.finish_reason == b.finish_reason and a.prompt_tokens == b.prompt_tokens


def test_cli_serve_subprocess(tiny_model_dir, prompt_ids, tmp_path):
    """`latr-sglang serve` as a user runs it: a separate process bound to 127.0.0.1, started and stopped by
    the launcher the engine actors use (it waits for /health)."""
    from latr_sglang.engines.sglang_launch import ServerProcess

    port = free_port()
    cmd = serve_command(tiny_model_dir, port)
    server = ServerProcess(cmd, f"http://127.0.0.1:{port}", tmp_path / "server.log", timeout_s=120)
    try:
        assert requests.get(server.url + "/get_model_info", timeout=10).status_code == 200
        r = requests.post(
            server.url + "/generate",
            json={"input_ids": list(prompt_ids[0]), "sampling_params": {"max_new_tokens": 3}},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["meta_info"]["completion_tokens"] <= 3
    finally:
        server.stop()
    assert server.process.returncode is not None


def test_cli_serve_names_a_missing_model(tmp_path):
    proc = subprocess.run(
        serve_command(tmp_path / "nope", free_port()), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "nope" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def control_server(tiny_engine):
    """The shared engine behind a server that takes weight updates from loopback callers."""
    from latr_sglang.server import ServerThread

    with ServerThread(tiny_engine, enable_weight_updates=True) as server:
        yield server


def test_update_weights_from_disk(tiny_model_dir, tmp_path, prompt_ids):
    import torch
    from safetensors.torch import load_file

    from latr_sglang.engines.torch_engine import TorchEngine
    from latr_sglang.server import ServerThread

    with (
        TorchEngine.from_pretrained(str(tiny_model_dir)) as engine,
        ServerThread(engine, enable_weight_updates=True) as server,
    ):
        body = {"input_ids": list(prompt_ids[0]), "sampling_params": {"max_new_tokens": 8, "temperature": 0}}
        before = post(server, body).json()["output_ids"]
        # write a perturbed copy of the model to disk, then put the original weights back in place
        torch.manual_seed(3)
        with torch.no_grad():
            for p in engine.hf_model.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        engine.hf_model.save_pretrained(tmp_path / "new")
        engine.update_weights_sync(load_file(str(tiny_model_dir / "model.safetensors")))
        assert post(server, body).json()["output_ids"] == before
        resp = requests.post(
            server.url + "/update_weights_from_disk", json={"model_path": str(tmp_path / "new")}
        )
        assert resp.status_code == 200 and resp.json()["success"] is True
        assert post(server, body).json()["output_ids"] != before
        bad = requests.post(
            server.url + "/update_weights_from_disk", json={"model_path": str(tmp_path / "none")}
        )
        assert bad.status_code == 400 and "safetensors" in bad.json()["message"]


def test_distributed_weight_update_rejects_bad_requests_naming_them(control_server):
    url = control_server.url
    resp = requests.post(url + "/update_weights_from_distributed", json={"names": ["x"]}, timeout=10)
    assert resp.status_code == 400 and "init_weights_update_group" in resp.json()["error"]["message"]
    resp = requests.post(url + "/init_weights_update_group", json={"master_port": 1}, timeout=10)
    assert resp.status_code == 400 and "master_address" in resp.json()["message"]
    assert requests.get(url + "/health", timeout=10).status_code == 200


def test_distributed_weight_update_over_gloo(control_server, tiny_engine, tiny_model_dir):
    """SGLang's two-call protocol against our server: the trainer (this thread) is rank 0 of a group the
    server joins at rank 1; each named tensor is announced over HTTP and broadcast. Afterwards the engine
    holds exactly the trainer's weights."""
    import threading

    import torch
    from transformers import AutoModelForCausalLM

    group, joined = join_weight_group(control_server.url, weight_group_body(free_port(), "g"), timeout=60)
    assert joined.json()["success"]

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    original = {k: v.clone() for k, v in tiny_engine.hf_model.state_dict().items()}
    try:
        torch.manual_seed(3)
        new = {name: torch.randn_like(p) for name, p in list(model.named_parameters())[:3]}
        payload = {"names": list(new), "dtypes": [str(t.dtype).removeprefix("torch.") for t in new.values()],
                   "shapes": [list(t.shape) for t in new.values()], "group_name": "g"}  # fmt: skip
        done = {}
        thread = threading.Thread(
            target=lambda: done.update(
                r=requests.post(control_server.url + "/update_weights_from_distributed", json=payload)
            )
        )
        thread.start()
        for tensor in new.values():
            group.broadcast(tensor, 0)
        thread.join(60)
        assert done["r"].json()["success"]
        served = tiny_engine.hf_model.state_dict()
        for name, tensor in new.items():
            assert torch.equal(served[name], tensor.to(served[name].dtype)), name
    finally:
        tiny_engine.update_weights_sync(original)


@pytest.mark.parametrize("mode", ["flattened", "multi"])
def test_bucketed_weight_push_over_gloo(control_server, tiny_engine, mode):
    """The trainer's push_weights against our server: one uint8 broadcast per bucket (SGLang's
    load_format="flattened_bucket") or one per tensor; the engine then holds exactly the pushed weights."""
    import torch

    from latr_sglang.engines.weight_sync import push_weights

    name = f"bucket-{mode}"
    group, joined = join_weight_group(control_server.url, weight_group_body(free_port(), name), timeout=60)
    assert joined.json()["success"], joined.text
    original = {k: v.clone() for k, v in tiny_engine.hf_model.state_dict().items()}
    torch.manual_seed(5)
    new = [(k, torch.randn_like(v)) for k, v in list(original.items())[:5]]

    async def main():
        http = SGLangHTTPEngine(control_server.url)
        try:
            return await push_weights(group, http, new, mode=mode, bucket_mb=0.01, group_name=name)
        finally:
            await http.close()

    try:
        calls = asyncio.run(main())
        assert calls >= 1
        served = tiny_engine.hf_model.state_dict()
        for k, tensor in new:
            assert torch.equal(served[k], tensor), k
    finally:
        tiny_engine.update_weights_sync(original)
        requests.post(control_server.url + "/destroy_weights_update_group", json={"group_name": name})


def test_streams_refused_before_the_first_token_answer_the_json_error(control_server, tiny_engine):
    """Released memory (503) and a rid already in flight (400) are known before any token: a stream gets the
    same JSON error as a plain request, not a 200 whose connection is then cut."""
    import threading

    url = control_server.url
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}
    streams = [
        ("/generate", {"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 2}, "stream": True}),
        ("/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 2, "stream": True}),
        ("/v1/chat/completions", chat),
    ]
    assert requests.post(url + "/release_memory_occupation", json={}, timeout=30).json()["success"]
    try:
        for path, body in streams:
            r = requests.post(url + path, json=body, timeout=30)
            assert r.status_code == 503, (path, r.status_code, r.text[:300])
            assert "resume_memory_occupation" in r.json()["error"]["message"]
    finally:
        requests.post(url + "/resume_memory_occupation", json={}, timeout=30)

    long = {"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 2000, "ignore_eos": True}}
    result = {}
    busy = {**long, "rid": "dup"}
    thread = threading.Thread(
        target=lambda: result.update(r=requests.post(url + "/generate", json=busy, timeout=60))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while tiny_engine.load()["running"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = requests.post(url + "/generate", json={**long, "rid": "dup", "stream": True}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "rid", r.text[:300]
        assert "already in flight" in r.json()["error"]["message"]
    finally:
        requests.post(url + "/abort_request", json={"rid": "dup"}, timeout=10)
        thread.join(30)
    assert result["r"].json()["meta_info"]["finish_reason"]["type"] == "abort"
    for path, body in streams:  # nothing was left registered or released: the same streams now work
        again = {**body, "rid": "dup"} if path == "/generate" else body
        r = requests.post(url + path, json=again, timeout=30)
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n"), (path, r.text[-300:])
