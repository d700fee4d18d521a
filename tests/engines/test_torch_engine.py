import asyncio
import threading
import time

import pytest
import torch

from latr_sglang.engines.base import FinishReason, GenerateRequest, RequestError, SamplingParams
from latr_sglang.engines.torch_engine import TorchEngine

GREEDY = SamplingParams(max_new_tokens=16, temperature=0.0, ignore_eos=True)


def run(engine, requests):
    return engine.generate_sync(requests)


def test_greedy_is_batch_independent(tiny_engine, prompt_ids):
    tiny_engine.flush_cache_sync()
    alone = [run(tiny_engine, [GenerateRequest(p, GREEDY)])[0].output_ids for p in prompt_ids]
    tiny_engine.flush_cache_sync()
    together = [o.output_ids for o in run(tiny_engine, [GenerateRequest(p, GREEDY) for p in prompt_ids])]
    assert alone == together
    assert len({tuple(a) for a in alone}) > 1  # the prompts really lead to different outputs


def test_greedy_matches_hf_generate(tiny_engine, prompt_ids):
    out = run(tiny_engine, [GenerateRequest(prompt_ids[0], GREEDY)])[0]
    with torch.no_grad():
        ref = tiny_engine.hf_model.generate(
            torch.tensor([prompt_ids[0]]), do_sample=False, max_new_tokens=16, min_new_tokens=16
        )[0, len(prompt_ids[0]) :]
    assert out.output_ids == ref.tolist()


def test_logprobs_are_the_policy_logprobs(tiny_engine, prompt_ids):
    sp = SamplingParams(max_new_tokens=8, temperature=1.0, sampling_seed=3, ignore_eos=True)
    out = run(tiny_engine, [GenerateRequest(prompt_ids[1], sp, top_logprobs_num=3)])[0]
    full = torch.tensor([list(prompt_ids[1]) + out.output_ids])
    with torch.no_grad():
        logits = tiny_engine.hf_model(full).logits[0, len(prompt_ids[1]) - 1 : -1]
    ref = torch.log_softmax(logits.double(), -1)
    expected = ref[torch.arange(8), torch.tensor(out.output_ids)]
    torch.testing.assert_close(torch.tensor(out.logprobs, dtype=torch.float64), expected, atol=1e-4, rtol=0)
    # top-k are the raw distribution's, in descending order
    for pos, top in enumerate(out.top_logprobs):
        ids = [t for t, _ in top]
        assert ids == ref[pos].topk(3).indices.tolist()


def test_top_logprobs_are_raw_under_temperature(tiny_engine, prompt_ids):
    hot = SamplingParams(max_new_tokens=1, temperature=0.5, sampling_seed=1)
    a = run(tiny_engine, [GenerateRequest(prompt_ids[2], hot, top_logprobs_num=2)])[0]
    b = run(tiny_engine, [GenerateRequest(prompt_ids[2], GREEDY, top_logprobs_num=2)])[0]
    assert [t for t, _ in a.top_logprobs[0]] == [t for t, _ in b.top_logprobs[0]]
    assert [lp for _, lp in a.top_logprobs[0]] == pytest.approx([lp for _, lp in b.top_logprobs[0]], abs=1e-6)


def test_seeded_sampling_is_deterministic(tiny_engine, prompt_ids):
    def sample(seed):
        sp = SamplingParams(max_new_tokens=12, temperature=1.0, sampling_seed=seed, ignore_eos=True)
        return run(tiny_engine, [GenerateRequest(prompt_ids[0], sp)])[0].output_ids

    assert sample(1) == sample(1)
    assert len({tuple(sample(s)) for s in range(6)}) > 1


def test_top_k_one_and_tiny_top_p_are_greedy(tiny_engine, prompt_ids):
    greedy = run(tiny_engine, [GenerateRequest(prompt_ids[0], GREEDY)])[0].output_ids
    for sp in (
        SamplingParams(max_new_tokens=16, temperature=1.0, top_k=1, sampling_seed=5, ignore_eos=True),
        SamplingParams(max_new_tokens=16, temperature=1.0, top_p=1e-6, sampling_seed=5, ignore_eos=True),
        SamplingParams(max_new_tokens=16, temperature=1.0, min_p=0.999999, sampling_seed=5, ignore_eos=True),
    ):
        assert run(tiny_engine, [GenerateRequest(prompt_ids[0], sp)])[0].output_ids == greedy


def test_continuation_reuses_the_prefix_and_matches_one_request(tiny_engine, prompt_ids):
    tiny_engine.flush_cache_sync()
    long = SamplingParams(max_new_tokens=24, temperature=0.0, ignore_eos=True)
    whole = run(tiny_engine, [GenerateRequest(prompt_ids[3], long)])[0]
    tiny_engine.flush_cache_sync()
    ids = list(prompt_ids[3])
    first = run(
        tiny_engine,
        [GenerateRequest(tuple(ids), GREEDY.__class__(max_new_tokens=8, temperature=0.0, ignore_eos=True))],
    )[0]
    assert first.cached_tokens == 0
    ids += first.output_ids
    sp8 = SamplingParams(max_new_tokens=8, temperature=0.0, ignore_eos=True)
    for _ in range(2):
        out = run(tiny_engine, [GenerateRequest(tuple(ids), sp8)])[0]
        assert out.cached_tokens == len(ids) - 1  # all but the last sampled token, which had no KV yet
        ids += out.output_ids
    assert ids[len(prompt_ids[3]) :] == whole.output_ids
    # a fork: parent's tokens up to position 5 plus another token reuses exactly that prefix
    fork = (*prompt_ids[3], *whole.output_ids[:5], (whole.output_ids[5] + 1) % 300)
    out = run(tiny_engine, [GenerateRequest(fork, sp8)])[0]
    assert out.cached_tokens == len(prompt_ids[3]) + 5


def test_a_short_request_does_not_wait_for_a_long_one(tiny_engine, prompt_ids):
    done_at = {}
    finished = threading.Event()

    def mark(name):
        def cb(out):
            done_at[name] = time.monotonic()
            if len(done_at) == 2:
                finished.set()

        return cb

    tiny_engine.submit(
        GenerateRequest(prompt_ids[0], SamplingParams(max_new_tokens=400, ignore_eos=True)), mark("long")
    )
    time.sleep(0.05)
    tiny_engine.submit(
        GenerateRequest(prompt_ids[1], SamplingParams(max_new_tokens=2, ignore_eos=True)), mark("short")
    )
    assert finished.wait(120)
    assert done_at["short"] < done_at["long"]


def test_stop_conditions(tiny_engine, prompt_ids):
    base = run(tiny_engine, [GenerateRequest(prompt_ids[0], GREEDY)])[0].output_ids
    stop_tok = base[3]
    out = run(
        tiny_engine,
        [
            GenerateRequest(
                prompt_ids[0], SamplingParams(max_new_tokens=16, temperature=0.0, stop_token_ids=(stop_tok,))
            )
        ],
    )[0]
    assert out.finish_reason == FinishReason.STOP and out.matched_stop == stop_tok
    assert out.output_ids == base[: base.index(stop_tok) + 1]
    text = tiny_engine.tokenizer.decode(base)
    stop_str = text[len(text) // 2 : len(text) // 2 + 2]
    out = run(
        tiny_engine,
        [
            GenerateRequest(
                prompt_ids[0], SamplingParams(max_new_tokens=16, temperature=0.0, stop=(stop_str,))
            )
        ],
    )[0]
    assert out.finish_reason == FinishReason.STOP and out.matched_stop == stop_str
    assert stop_str in tiny_engine.tokenizer.decode(out.output_ids)
    out = run(tiny_engine, [GenerateRequest(prompt_ids[0], SamplingParams(max_new_tokens=0))])[0]
    assert out.output_ids == [] and out.finish_reason == FinishReason.LENGTH
    eos = tiny_engine.tokenizer.eos_token_id
    out = run(
        tiny_engine,
        [
            GenerateRequest(
                prompt_ids[0],
                SamplingParams(
                    max_new_tokens=10, temperature=0.0, stop_token_ids=(base[0],), min_new_tokens=4
                ),
            )
        ],
    )[0]
    assert len(out.output_ids) >= 4 and base[0] not in out.output_ids[:3] and eos not in out.output_ids[:3]


def test_context_length_ends_generation(tiny_model_dir):
    with TorchEngine.from_pretrained(str(tiny_model_dir), context_length=12) as engine:
        out = engine.generate_sync(
            [GenerateRequest((5, 6, 7), SamplingParams(max_new_tokens=12, ignore_eos=True))]
        )
        assert out[0].finish_reason == FinishReason.LENGTH and len(out[0].output_ids) == 9


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (GenerateRequest(()), "input_ids"),
        (GenerateRequest((1, 10**6)), "1000000"),
        (GenerateRequest((1, -2)), "-2"),
        (GenerateRequest((1,), SamplingParams(max_new_tokens=-1)), "max_new_tokens"),
        (GenerateRequest((1,), SamplingParams(max_new_tokens=10**9)), "max_new_tokens"),
        (GenerateRequest((1,) * 3000), "context length"),
        (GenerateRequest((1,), SamplingParams(temperature=-1.0)), "temperature"),
        (GenerateRequest((1,), SamplingParams(top_p=0.0)), "top_p"),
        (GenerateRequest((1,), SamplingParams(top_k=0)), "top_k"),
        (GenerateRequest((1,), SamplingParams(temperature=float("nan"))), "temperature"),
        (GenerateRequest((1,), top_logprobs_num=-1), "top_logprobs_num"),
    ],
)
def test_bad_requests_name_the_field(tiny_engine, request_, field):
    with pytest.raises(RequestError, match=field):
        tiny_engine.generate_sync([request_])


def test_update_weights_changes_outputs_and_flushes_the_cache(tiny_model_dir, prompt_ids):
    with TorchEngine.from_pretrained(str(tiny_model_dir)) as engine:
        before = engine.generate_sync([GenerateRequest(prompt_ids[0], GREEDY)])[0].output_ids
        assert len(engine.prefix_cache) == 1
        state = {k: v.clone() for k, v in engine.hf_model.state_dict().items()}
        torch.manual_seed(1)
        new = {
            k: torch.randn_like(v) * 0.5 if k.endswith("weight") and "norm" not in k else v
            for k, v in state.items()
        }
        assert engine.update_weights_sync(new) == len(new)
        assert len(engine.prefix_cache) == 0
        after = engine.generate_sync([GenerateRequest(prompt_ids[0], GREEDY)])[0].output_ids
        assert after != before
        engine.update_weights_sync(state)
        assert engine.generate_sync([GenerateRequest(prompt_ids[0], GREEDY)])[0].output_ids == before
        with pytest.raises(KeyError, match="no_such_weight"):
            engine.update_weights_sync({"no_such_weight": torch.zeros(1)})
        with pytest.raises(ValueError, match="shape"):
            engine.update_weights_sync({"lm_head.weight": torch.zeros(2, 2)})


def test_async_generate_and_cancellation(tiny_engine, prompt_ids):
    async def main():
        outs = await tiny_engine.generate([GenerateRequest(p, GREEDY) for p in prompt_ids])
        assert [len(o.output_ids) for o in outs] == [16] * len(prompt_ids)
        task = asyncio.create_task(
            tiny_engine.generate(
                [GenerateRequest(prompt_ids[0], SamplingParams(max_new_tokens=2000, ignore_eos=True))]
            )
        )
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the engine keeps serving after a cancellation
        again = await tiny_engine.generate([GenerateRequest(prompt_ids[1], GREEDY)])
        assert len(again[0].output_ids) == 16

    asyncio.run(main())


def test_input_logprobs(tiny_engine, prompt_ids):
    ids = prompt_ids[0]
    out = run(tiny_engine, [GenerateRequest(ids, SamplingParams(max_new_tokens=1), logprob_start_len=0)])[0]
    assert [t for t, _ in out.input_logprobs] == list(ids) and out.input_logprobs[0][1] is None
    with torch.no_grad():
        ref = torch.log_softmax(tiny_engine.hf_model(torch.tensor([ids])).logits[0].double(), -1)
    expected = [float(ref[i - 1, ids[i]]) for i in range(1, len(ids))]
    assert [lp for _, lp in out.input_logprobs[1:]] == pytest.approx(expected, abs=1e-4)


def test_update_weights_with_tied_embeddings(tmp_path, prompt_ids):
    """SmolLM2 ties lm_head to the embeddings: its full state dict names both."""
    from latr_sglang.tiny import make_tiny_model

    path = make_tiny_model(tmp_path / "tied", tie_word_embeddings=True)
    with TorchEngine.from_pretrained(str(path)) as engine:
        state = {k: v.clone() for k, v in engine.hf_model.state_dict().items()}
        assert "lm_head.weight" in state
        before = engine.generate_sync([GenerateRequest(prompt_ids[0], GREEDY)])[0].output_ids
        state["lm_head.weight"].mul_(-1.0)  # the same tensor as the embeddings: both change
        engine.update_weights_sync(state)
        assert engine.hf_model.lm_head.weight is engine.hf_model.model.embed_tokens.weight
        assert engine.generate_sync([GenerateRequest(prompt_ids[0], GREEDY)])[0].output_ids != before


def test_event_loops_on_several_threads_each_get_their_own_results(tiny_engine, prompt_ids):
    """Finished requests reach each caller's event loop through that loop's mailbox: many short requests from
    four threads at once, each thread's loop gets exactly its own outputs (the greedy ones of its prompts)."""
    expected = [o.output_ids for o in run(tiny_engine, [GenerateRequest(p, GREEDY) for p in prompt_ids])]
    results: dict[int, list[list[int]]] = {}

    def caller(k: int) -> None:
        async def main():
            calls = [tiny_engine.generate([GenerateRequest(p, GREEDY)]) for p in prompt_ids * 3]
            return [out[0].output_ids for out in await asyncio.gather(*calls)]

        results[k] = asyncio.run(main())

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == [0, 1, 2, 3]
    for outs in results.values():
        assert outs == expected * 3
    # a loop that has gone away (asyncio.run closed it) leaves the engine serving the next caller
    assert run(tiny_engine, [GenerateRequest(prompt_ids[0], GREEDY)])[0].output_ids == expected[0]


def _in_parts(engine, request, part_ends):
    async def main():
        return [part async for part in engine.generate_in_parts(request, part_ends)]

    return asyncio.run(main())


def test_output_in_parts_adds_up_to_the_whole_output(tiny_engine, prompt_ids):
    request = GenerateRequest(prompt_ids[0], GREEDY, top_logprobs_num=2)
    tiny_engine.flush_cache_sync()
    whole = run(tiny_engine, [request])[0]
    tiny_engine.flush_cache_sync()
    parts = _in_parts(tiny_engine, request, [3, 4, 10, 16, 40])  # 16 is the end: no part there, nor past it
    assert [len(p.output_ids) for p in parts] == [3, 1, 6, 6]
    assert [p.finish_reason for p in parts] == [None, None, None, FinishReason.LENGTH]
    assert [t for p in parts for t in p.output_ids] == whole.output_ids
    assert [lp for p in parts for lp in p.logprobs] == pytest.approx(whole.logprobs)
    assert [len(t) for p in parts for t in p.top_logprobs] == [2] * 16
    assert parts[-1].prompt_tokens == len(prompt_ids[0])


def test_output_in_parts_stops_where_the_request_stops(tiny_engine, prompt_ids):
    probe = run(tiny_engine, [GenerateRequest(prompt_ids[1], GREEDY)])[0].output_ids
    stop = SamplingParams(max_new_tokens=16, temperature=0.0, stop_token_ids=(probe[4],), ignore_eos=True)
    parts = _in_parts(tiny_engine, GenerateRequest(prompt_ids[1], stop), [2, 8, 12])
    first = probe.index(probe[4])  # the stop id may occur before position 4
    assert [t for p in parts for t in p.output_ids] == probe[: first + 1]
    assert parts[-1].finish_reason == FinishReason.STOP and parts[-1].matched_stop == probe[4]


def test_closing_output_in_parts_early_cancels_the_request(tiny_engine, prompt_ids):
    long = GenerateRequest(prompt_ids[0], SamplingParams(max_new_tokens=2000, ignore_eos=True))

    async def main():
        stream = tiny_engine.generate_in_parts(long, [1, 2, 3])
        first = await stream.__anext__()
        await stream.aclose()
        return first

    assert len(asyncio.run(main()).output_ids) == 1
    deadline = time.monotonic() + 10
    while tiny_engine.load()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tiny_engine.load() == {"running": 0, "waiting": 0}  # the request left the batch
    assert len(run(tiny_engine, [GenerateRequest(prompt_ids[1], GREEDY)])[0].output_ids) == 16


def test_output_in_parts_refuses_a_bad_request_by_name(tiny_engine, prompt_ids):
    with pytest.raises(RequestError, match="input_ids is empty"):
        _in_parts(tiny_engine, GenerateRequest((), GREEDY), [1])
    for bad in (0, -3, 2.5, "4", True):
        with pytest.raises(RequestError, match=f"part_ends contains {bad!r}"):
            _in_parts(tiny_engine, GenerateRequest(prompt_ids[0], GREEDY), [2, bad])


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_batch_size": 0}, "max_batch_size=0"),
        ({"max_batch_size": True}, "max_batch_size=True"),
        ({"max_prefill_tokens": -1}, "max_prefill_tokens=-1"),
        ({"context_length": 1}, "context_length=1"),
    ],
)
def test_sizes_that_would_admit_nothing_are_refused_at_construction(tiny_engine, kwargs, needle):
    # a batch of 0 rows would leave every request waiting forever
    with pytest.raises(ValueError, match=needle):
        TorchEngine(tiny_engine.hf_model, tiny_engine.tokenizer, **kwargs)


def test_an_engine_left_open_is_closed_at_exit_before_the_interpreter_tears_down(tiny_model_dir):
    """A script that never calls close_sync: its engine thread is stopped by an atexit hook (which runs before
    daemon threads are abandoned in a torch call), not left running while torch is torn down."""
    import subprocess
    import sys

    script = f"""
import atexit
checks = []
atexit.register(lambda: print("engine thread alive at exit:", checks[0]._thread.is_alive(), flush=True))
from latr_sglang.engines.base import GenerateRequest, SamplingParams
from latr_sglang.engines.torch_engine import TorchEngine
engine = TorchEngine.from_pretrained({str(tiny_model_dir)!r})
checks.append(engine)
engine.generate_sync([GenerateRequest([1, 2, 3], SamplingParams(max_new_tokens=4, ignore_eos=True))])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # atexit hooks run last-registered first: ours (registered on import) ran before the check
    assert "engine thread alive at exit: False" in done.stdout


def test_closing_an_engine_takes_it_off_the_exit_list(tiny_model_dir):
    from latr_sglang.engines import torch_engine

    engine = TorchEngine.from_pretrained(str(tiny_model_dir))
    assert engine in torch_engine._open_engines
    engine.close_sync()
    assert engine not in torch_engine._open_engines and not engine._thread.is_alive()
