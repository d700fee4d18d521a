"""SGLangHTTPEngine.generate_in_parts: a request streamed over SGLang's /generate (``stream: true``) against a
live server on 127.0.0.1 (ours, which streams as SGLang 0.5.23 does, both with and without
--incremental-streaming-output), and against small servers that stream wrongly."""

import asyncio
import dataclasses
import time

import pytest
from aiohttp import web
from parts_checks import (
    check_a_rollout_in_parts_is_the_rollout_of_whole_requests,
    check_the_parts_add_up_to_the_whole_output,
    in_parts,
)
from server_helpers import aiohttp_server

from latr_sglang.engines.base import (
    FinishReason,
    GenerateRequest,
    RequestError,
    SamplingParams,
    join_parts,
)
from latr_sglang.engines.sglang_http import EngineHTTPError, SGLangHTTPEngine
from latr_sglang.server import ServerThread


@pytest.fixture(scope="module", params=[False, True], ids=["cumulative", "incremental"])
def server64(request, tiny_engine64):
    server = ServerThread(tiny_engine64, incremental_streaming_output=request.param).start()
    yield server
    server.stop()


def run_with(url, body):
    async def main():
        engine = SGLangHTTPEngine(url)
        try:
            return await body(engine)
        finally:
            await engine.close()

    return asyncio.run(main())


def test_the_parts_add_up_to_the_whole_output(server64):
    run_with(server64.url, check_the_parts_add_up_to_the_whole_output)


def test_a_stop_ends_the_parts(server64, tiny_engine64):
    prompt = (1, 2, 3, 4)
    free = tiny_engine64.generate_sync(
        [GenerateRequest(prompt, SamplingParams(max_new_tokens=12, temperature=0))]
    )
    stop = free[0].output_ids[5]
    request = GenerateRequest(
        prompt, SamplingParams(max_new_tokens=12, temperature=0, stop_token_ids=(stop,))
    )
    parts = run_with(server64.url, lambda engine: in_parts(engine, request, [2, 4, 6, 8, 10]))
    joined = join_parts(parts)
    assert joined.finish_reason == FinishReason.STOP and joined.matched_stop == stop
    assert joined.output_ids == free[0].output_ids[: free[0].output_ids.index(stop) + 1]


def test_closing_early_aborts_the_request_and_the_server_goes_on(server64, tiny_engine64):
    long = GenerateRequest((1, 2, 3), SamplingParams(max_new_tokens=2000, temperature=0, ignore_eos=True))

    async def body(engine):
        decoded = tiny_engine64.stats["decode_tokens"]
        stream = engine.generate_in_parts(long, range(1, 2000))
        got = [await anext(stream) for _ in range(3)]
        await stream.aclose()
        deadline = time.monotonic() + 20
        while tiny_engine64.load()["running"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        running, decoded = tiny_engine64.load()["running"], tiny_engine64.stats["decode_tokens"] - decoded
        short = dataclasses.replace(long, sampling=SamplingParams(max_new_tokens=4))
        after = await in_parts(engine, short, [2])
        return got, running, decoded, after

    got, running, decoded, after = run_with(server64.url, body)
    assert [p.finish_reason for p in got] == [None] * 3
    # the request was cancelled when the client left, not decoded to its 2000 tokens for nobody
    assert running == 0 and decoded < 1000
    assert join_parts(after).completion_tokens == 4


def test_bad_input_is_named_before_anything_streams(server64):
    good = GenerateRequest((1, 2), SamplingParams(max_new_tokens=4))

    async def body(engine):
        for ends, needle in (([0], "part_ends contains 0"), (["3"], "part_ends contains '3'")):
            with pytest.raises(RequestError, match=needle):
                await in_parts(engine, good, ends)
        with pytest.raises(RequestError, match="input_ids"):
            await in_parts(engine, GenerateRequest((1, 10**6), SamplingParams(max_new_tokens=4)), [2])

    run_with(server64.url, body)


def test_a_rollout_in_streamed_parts_is_the_rollout_of_whole_requests(server64, tiny_engine64):
    check_a_rollout_in_parts_is_the_rollout_of_whole_requests(
        SGLangHTTPEngine, lambda: (server64.url,), tiny_engine64
    )


# ---- servers that stream wrongly -------------------------------------------------------------------------
def _event(ids, finish=None):
    meta = {"finish_reason": finish, "output_token_logprobs": [[-0.5, t, None] for t in ids]}
    return b"data: " + web.json_response({"output_ids": ids, "meta_info": meta}).body + b"\n\n"


BROKEN_STREAMS = {
    "no final": ([_event([5]), _event([5, 6])], "ended without the request's final output"),
    "error event": ([_event([5]), b'data: {"error": {"message": "out of memory"}}\n\n'], "out of memory"),
    "not json": ([b"data: {oops\n\n"], "not JSON"),
    "increments unsaid": ([_event([5, 6]), _event([7])], "1 output ids after 2 were streamed"),
    "after the final": (
        [_event([5], {"type": "length"}), _event([5, 6], {"type": "length"})],
        "went on after the final output",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_STREAMS))
def test_a_broken_stream_raises_a_named_error(case):
    chunks, needle = BROKEN_STREAMS[case]

    async def generate(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in chunks:
            await resp.write(chunk)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def main():
        runner, url = await aiohttp_server({"/generate": generate})
        engine = SGLangHTTPEngine(url)
        try:
            request = GenerateRequest((1, 2), SamplingParams(max_new_tokens=2))
            with pytest.raises(EngineHTTPError, match=needle):
                await asyncio.wait_for(in_parts(engine, request, [1]), timeout=30)
        finally:
            await engine.close()
            await runner.cleanup()

    asyncio.run(main())


def _serving_once(chunks_per_post):
    """A /generate that answers its k-th POST with chunks_per_post[k] (the last for all later ones): a list of
    stream chunks, then [DONE]; a None chunk drops the connection there (before any answer if first)."""
    posts = []

    async def generate(request: web.Request) -> web.StreamResponse:
        chunks = chunks_per_post[min(len(posts), len(chunks_per_post) - 1)]
        posts.append(await request.json())
        if chunks and chunks[0] is None:
            request.transport.close()
            return web.Response()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in chunks:
            if chunk is None:
                request.transport.close()
                return resp
            await resp.write(chunk)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    return generate, posts


def _stream_through(generate, retries=2):
    async def main():
        runner, url = await aiohttp_server({"/generate": generate})
        engine = SGLangHTTPEngine(url, retries=retries)
        try:
            request = GenerateRequest((1, 2), SamplingParams(max_new_tokens=2))
            return await asyncio.wait_for(in_parts(engine, request, [1]), timeout=30)
        finally:
            await engine.close()
            await runner.cleanup()

    return asyncio.run(main())


GOOD_STREAM = [_event([5]), _event([5, 6], {"type": "length"})]


def test_a_stream_that_breaks_before_its_first_token_is_sent_again():
    generate, posts = _serving_once([[None], GOOD_STREAM])
    parts = _stream_through(generate)
    assert len(posts) == 2 and posts[0] == posts[1]
    assert join_parts(parts).output_ids == [5, 6]


@pytest.mark.parametrize(
    "chunks, needle",
    [([[None]], "broke after 0 tokens"), ([[_event([5]), None], GOOD_STREAM], "broke after 1 tokens")],
    ids=["never answers", "breaks after a part"],
)
def test_a_stream_that_breaks_is_named_and_not_sent_again_once_it_has_handed_tokens_over(chunks, needle):
    generate, posts = _serving_once(chunks)
    with pytest.raises(EngineHTTPError, match=needle):
        _stream_through(generate, retries=2)
    # tokens handed over cannot be taken back: a request is sent again only if none were
    assert len(posts) == (3 if needle.endswith("0 tokens") else 1)
