"""SGLangInProcessEngine over a CPU stand-in for ``sglang.Engine`` (server_helpers.TorchBackedSGLangEngine:
our torch engine behind the server's /generate parser and stream builder, the events SGLang 0.5.23 yields
from ``async_generate``), with and without --incremental-streaming-output, and over generators that stream
wrongly."""

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from server_helpers import TorchBackedSGLangEngine

from latr_sglang.config import LATRConfig
from latr_sglang.driver import LATRSampler
from latr_sglang.engines.base import (
    FinishReason,
    GenerateRequest,
    RequestError,
    SamplingParams,
    hands_over_parts,
    join_parts,
)
from latr_sglang.engines.sglang_inproc import SGLangInProcessEngine
from latr_sglang.engines.wire import StreamError


def adapter_over(engine, incremental=False):
    return SGLangInProcessEngine(TorchBackedSGLangEngine(engine, incremental_streaming_output=incremental))


async def in_parts(engine, request, part_ends):
    return [part async for part in engine.generate_in_parts(request, part_ends)]


def test_whole_requests_share_the_wire_translation(tiny_engine, prompt_ids):
    adapter = adapter_over(tiny_engine)
    greedy = SamplingParams(max_new_tokens=12, temperature=0.0, ignore_eos=True)
    reqs = [GenerateRequest(p, greedy, top_logprobs_num=2) for p in prompt_ids[:2]]

    async def body():
        outs = await adapter.generate(reqs)
        await adapter.flush_cache()
        return outs

    outs = asyncio.run(body())
    local = tiny_engine.generate_sync(reqs)
    assert [o.output_ids for o in outs] == [o.output_ids for o in local]
    assert adapter.engine.tokenizer_manager.flushed == 1


def test_weights_go_through_the_tokenizer_manager_as_sglang_engine_sends_them(tiny_model_dir):
    """With SGLang's own UpdateWeightsFromTensorReqInput and MultiprocessingSerializer, in a process of its
    own (sglang_inproc_weights_check.py): a changed lm_head reaches generation, one payload per TP rank."""
    script = Path(__file__).with_name("sglang_inproc_weights_check.py")
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_model_dir)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["before"] != [0] * 6 and result["after"] == [0] * 6
    assert result["loaded"] == [["lm_head.weight"]]


def test_a_second_event_loop_is_refused_by_name_not_left_waiting(tiny_engine):
    adapter = adapter_over(tiny_engine)
    asyncio.run(adapter.flush_cache())  # binds the manager to this loop, as SGLang's first request does
    request = GenerateRequest((1, 2), SamplingParams(max_new_tokens=2))
    for call in (
        adapter.flush_cache,
        lambda: adapter.generate([request]),
        lambda: in_parts(adapter, request, [1]),
    ):
        with pytest.raises(RuntimeError, match="drive SGLangInProcessEngine from one loop"):
            asyncio.run(call())


@pytest.mark.parametrize("incremental", [False, True], ids=["cumulative", "incremental"])
def test_the_parts_add_up_to_the_whole_output(tiny_engine64, incremental):
    adapter = adapter_over(tiny_engine64, incremental)
    request = GenerateRequest(
        (1, 2, 3, 4), SamplingParams(max_new_tokens=20, temperature=0.7, sampling_seed=5, ignore_eos=True), 3
    )

    async def body():
        await adapter.flush_cache()  # each answer computed afresh (no cached prefix): equal to the last bit
        whole = (await adapter.generate([request]))[0]
        runs = {}
        for ends in ([8, 16], [5], []):
            await adapter.flush_cache()
            runs[str(ends)] = await in_parts(adapter, request, ends)
        return whole, runs

    whole, runs = asyncio.run(body())
    assert hands_over_parts(adapter)
    for ends, parts in runs.items():
        joined = join_parts(parts)
        assert joined.output_ids == whole.output_ids, ends
        assert joined.logprobs == whole.logprobs and joined.top_logprobs == whole.top_logprobs
        assert joined.finish_reason == FinishReason.LENGTH
        assert [p.finish_reason for p in parts[:-1]] == [None] * (len(parts) - 1)
    # the stream interval is the spacing of the part ends, as over HTTP
    assert [len(p.output_ids) for p in runs["[8, 16]"]] == [1, 8, 8, 3]
    assert [len(p.output_ids) for p in runs["[5]"]] == [1, 5, 5, 5, 4]
    assert [len(p.output_ids) for p in runs["[]"]] == [1, 19]


def test_closing_early_cancels_the_request(tiny_engine64):
    adapter = adapter_over(tiny_engine64)
    long = GenerateRequest((1, 2, 3), SamplingParams(max_new_tokens=2000, temperature=0, ignore_eos=True))

    async def body():
        decoded = tiny_engine64.stats["decode_tokens"]
        stream = adapter.generate_in_parts(long, range(1, 2000))
        got = [await anext(stream) for _ in range(3)]
        await stream.aclose()
        assert adapter.engine.open_streams == 0  # closed at once, not later by the loop's finalizer
        deadline = time.monotonic() + 20
        while tiny_engine64.load()["running"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return got, tiny_engine64.load()["running"], tiny_engine64.stats["decode_tokens"] - decoded

    got, running, decoded = asyncio.run(body())
    assert [p.finish_reason for p in got] == [None] * 3
    assert running == 0 and decoded < 1000  # not decoded to its 2000 tokens for nobody


def test_bad_input_is_named(tiny_engine64):
    adapter = adapter_over(tiny_engine64)
    good = GenerateRequest((1, 2), SamplingParams(max_new_tokens=4))

    async def body():
        with pytest.raises(RequestError, match="part_ends contains 0"):
            await in_parts(adapter, good, [0])
        with pytest.raises(RequestError, match="input_ids"):
            await in_parts(adapter, GenerateRequest((1, 10**6), SamplingParams(max_new_tokens=4)), [2])

    asyncio.run(body())


def test_a_rollout_in_parts_is_the_rollout_of_whole_requests(tiny_engine64):
    cfg = LATRConfig.preset("countdown", lookahead_steps=(3, 6), chunk_size=12)
    tok = tiny_engine64.tokenizer
    prompts = [tok(f"{i} + {i * 7} = ").input_ids for i in range(3)]
    streamed = []

    class CountsStreams(SGLangInProcessEngine):
        async def generate_in_parts(self, request, part_ends):
            streamed.append(request)
            async for part in super().generate_in_parts(request, part_ends):
                yield part

    def rollout(interval):
        engine = CountsStreams(TorchBackedSGLangEngine(tiny_engine64))
        sampler = LATRSampler(
            engine,
            dataclasses.replace(cfg, tree_part_interval=interval),
            SamplingParams(max_new_tokens=30),
            tiny_engine64.eos_ids,
            lambda t: tok.decode([t]),
        )
        return asyncio.run(sampler.sample(prompts, 5, eta=1.0, seed=2))

    whole = rollout(0)
    assert streamed == []
    with_parts = rollout(4)
    assert len(streamed) > 0
    assert sum(len(g.branches) for g in whole) > len(whole)  # the trees forked
    for a, b in zip(with_parts, whole):
        assert a.branches == b.branches and a.exit_step == b.exit_step
        assert [t.token_ids for t in a.trajectories] == [t.token_ids for t in b.trajectories]


# ---- generators that stream wrongly ----------------------------------------------------------------------
def _event(ids, finish=None):
    return {
        "output_ids": ids,
        "meta_info": {"finish_reason": finish, "output_token_logprobs": [[-0.5, t, None] for t in ids]},
    }


BROKEN_STREAMS = {
    "no final": ([_event([5]), _event([5, 6])], "ended without the request's final output"),
    "no meta_info": ([{"output_ids": [5]}], "has no meta_info"),
    "increments unsaid": ([_event([5, 6]), _event([7])], "1 output ids after 2 were streamed"),
    "after the final": (
        [_event([5], {"type": "length"}), _event([5, 6], {"type": "length"})],
        "went on after the final output",
    ),
}


class StreamsEvents:
    """An sglang.Engine whose stream yields `events`, and records whether the consumer closed it."""

    def __init__(self, events):
        self.events, self.closed = events, False
        self.tokenizer_manager = types.SimpleNamespace(event_loop=None)

    async def async_generate(self, stream=False, **kwargs):
        assert stream and kwargs["sampling_params"]["stream_interval"] == 1

        async def events():
            try:
                for event in self.events:
                    yield event
            finally:
                self.closed = True

        return events()


@pytest.mark.parametrize("case", list(BROKEN_STREAMS))
def test_a_broken_stream_raises_a_named_error_and_is_closed(case):
    events, needle = BROKEN_STREAMS[case]
    fake = StreamsEvents(events)
    request = GenerateRequest((1, 2), SamplingParams(max_new_tokens=2))

    async def body():
        with pytest.raises(StreamError, match=needle):
            await in_parts(SGLangInProcessEngine(fake), request, [1])
        return fake.closed  # closed by the engine at once, not later by the loop's finalizer

    assert asyncio.run(body())
