"""A group's routing key travels with each request: SGLang's own GenerateReqInput accepts the payload, and a
live server (ours, real HTTP) receives the key in the body and the router header."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from aiohttp import web
from server_helpers import aiohttp_server

from latr_sglang.engines.base import GenerateRequest, SamplingParams
from latr_sglang.engines.sglang_http import ROUTING_KEY_HEADER, SGLangHTTPEngine
from latr_sglang.engines.wire import request_to_sglang


def _payload(request: GenerateRequest) -> dict:
    payload = request_to_sglang(request)
    payload["routing_key"] = request.routing_key
    return payload


def test_the_payload_validates_against_sglangs_generate_req_input():
    req = GenerateRequest((1, 2, 3), SamplingParams(max_new_tokens=4), top_logprobs_num=2, routing_key="g-7")
    script = Path(__file__).with_name("sglang_io_check.py")
    proc = subprocess.run(
        [sys.executable, str(script)],
        input=json.dumps([_payload(req)]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [{"ok": True, "error": ""}]

    # the field is GenerateReqInput's own (an unknown key would fail above too): read from its source, since
    # importing io_struct here would need torchvision (sglang_io_check.py explains)
    import importlib.util

    source = Path(importlib.util.find_spec("sglang.srt.managers.io_struct").origin).read_text()
    generate_req = source[
        source.index("class GenerateReqInput") : source.index("class TokenizedGenerateReqInput")
    ]
    assert "routing_key: Optional[str]" in generate_req


def test_every_request_carries_the_key_in_body_and_header():
    seen: list[tuple[str | None, str | None]] = []

    async def generate(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((body.get("routing_key"), request.headers.get(ROUTING_KEY_HEADER)))
        n = body["sampling_params"]["max_new_tokens"]
        meta = {"finish_reason": {"type": "length"}, "output_token_logprobs": [[-0.5, 5, None]] * n}
        return web.json_response({"output_ids": [5] * n, "meta_info": meta})

    async def run() -> None:
        runner, url = await aiohttp_server({"/generate": generate})
        engine = SGLangHTTPEngine(url)
        reqs = [
            GenerateRequest((1, 2), SamplingParams(max_new_tokens=2), routing_key="tree-3") for _ in range(3)
        ]
        outs = await engine.generate([*reqs, GenerateRequest((1,), SamplingParams(max_new_tokens=1))])
        assert [len(o.output_ids) for o in outs] == [2, 2, 2, 1]
        await engine.close()
        await runner.cleanup()

    asyncio.run(run())
    assert sorted(seen, key=str) == sorted([("tree-3", "tree-3")] * 3 + [(None, None)], key=str)


def test_our_server_accepts_a_routing_key(tiny_server):
    engine = SGLangHTTPEngine(tiny_server.url)

    async def run():
        out = await engine.generate(
            [GenerateRequest((5, 6, 7), SamplingParams(max_new_tokens=2), routing_key="k")]
        )
        await engine.close()
        return out

    assert len(asyncio.run(run())[0].output_ids) == 2
