"""What the tests of both SGLang engines' `generate_in_parts` check alike (over HTTP and in-process): the
parts add up to the whole output at SGLang's stream interval, and a rollout in parts is the rollout of whole
requests."""

import asyncio
import dataclasses

from latr_sglang.config import LATRConfig
from latr_sglang.driver import LATRSampler
from latr_sglang.engines.base import (
    FinishReason,
    GenerateRequest,
    SamplingParams,
    hands_over_parts,
    join_parts,
)


async def in_parts(engine, request, part_ends):
    return [part async for part in engine.generate_in_parts(request, part_ends)]


async def check_the_parts_add_up_to_the_whole_output(engine) -> None:
    request = GenerateRequest(
        (1, 2, 3, 4), SamplingParams(max_new_tokens=20, temperature=0.7, sampling_seed=5, ignore_eos=True), 3
    )
    await engine.flush_cache()  # each answer computed afresh (no cached prefix): equal to the last bit
    whole = (await engine.generate([request]))[0]
    runs = {}
    for ends in ([8, 16], [5], []):
        await engine.flush_cache()
        runs[str(ends)] = await in_parts(engine, request, ends)
    assert hands_over_parts(engine)
    for ends, parts in runs.items():
        joined = join_parts(parts)
        assert joined.output_ids == whole.output_ids, ends
        assert joined.logprobs == whole.logprobs and joined.top_logprobs == whole.top_logprobs
        assert all(len(pos) == 3 for pos in joined.top_logprobs)
        assert joined.finish_reason == FinishReason.LENGTH
        assert [p.finish_reason for p in parts[:-1]] == [None] * (len(parts) - 1)
    # the stream interval is the spacing of the part ends: SGLang sends the first token at once, then every
    # interval tokens, and the last one with the final output
    assert [len(p.output_ids) for p in runs["[8, 16]"]] == [1, 8, 8, 3]
    assert [len(p.output_ids) for p in runs["[5]"]] == [1, 5, 5, 5, 4]
    assert [len(p.output_ids) for p in runs["[]"]] == [1, 19]


def check_a_rollout_in_parts_is_the_rollout_of_whole_requests(
    engine_class, engine_args, tiny_engine64
) -> None:
    """`engine_class(*engine_args())` for each of the two rollouts (each in an event loop of its own)."""
    cfg = LATRConfig.preset("countdown", lookahead_steps=(3, 6), chunk_size=12)
    tok = tiny_engine64.tokenizer
    prompts = [tok(f"{i} + {i * 7} = ").input_ids for i in range(3)]
    streamed = []

    class CountsStreams(engine_class):
        async def generate_in_parts(self, request, part_ends):
            streamed.append(request)
            async for part in super().generate_in_parts(request, part_ends):
                yield part

    async def rollout(interval):
        engine = CountsStreams(*engine_args())
        try:
            sampler = LATRSampler(
                engine,
                dataclasses.replace(cfg, tree_part_interval=interval),
                SamplingParams(max_new_tokens=30),
                tiny_engine64.eos_ids,
                lambda t: tok.decode([t]),
            )
            return await sampler.sample(prompts, 5, eta=1.0, seed=2)
        finally:
            await engine.close()

    whole = asyncio.run(rollout(0))
    assert streamed == []
    with_parts = asyncio.run(rollout(4))
    assert len(streamed) > 0
    assert sum(len(g.branches) for g in whole) > len(whole)  # the trees forked
    for a, b in zip(with_parts, whole):
        assert a.branches == b.branches and a.exit_step == b.exit_step
        assert [t.token_ids for t in a.trajectories] == [t.token_ids for t in b.trajectories]
