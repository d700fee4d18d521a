"""SGLangInProcessEngine over a CPU stand-in for ``sglang.Engine`` (server_helpers.TorchBackedSGLangEngine:
our torch engine behind the server's /generate parser and stream builder, the events SGLang 0.5.23 yields
from ``async_generate``), with and without --incremental-streaming-output, and over generators that stream
wrongly."""

import asyncio
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from parts_checks import (
    check_a_rollout_in_parts_is_the_rollout_of_whole_requests,
    check_the_parts_add_up_to_the_whole_output,
    in_parts,
)
from server_helpers import TorchBackedSGLangEngine

from latr_sglang.engines.base import (
    GenerateRequest,
    RequestError,
    SamplingParams,
)
from latr_sglang.engines.sglang_inproc import SGLangInProcessEngine
from latr_sglang.engines.wire import StreamError


def adapter_over(engine, incremental=False):
    return SGLangInProcessEngine(TorchBackedSGLangEngine(engine, incremental_streaming_output=incremental))


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
    asyncio.run(check_the_parts_add_up_to_the_whole_output(adapter_over(tiny_engine64, incremental)))


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
    check_a_rollout_in_parts_is_the_rollout_of_whole_requests(
        SGLangInProcessEngine, lambda: (TorchBackedSGLangEngine(tiny_engine64),), tiny_engine64
    )


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
