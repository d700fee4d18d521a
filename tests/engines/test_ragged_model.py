import pytest
import torch

from latr_sglang.engines.ragged_model import RaggedCausalLM, RaggedItem
from latr_sglang.models import load_model_and_tokenizer


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_llama_dir"])
def test_ragged_forward_matches_hf_across_cached_prefix_and_mixed_batch(request, fixture):
    hf_model, tok, _ = load_model_and_tokenizer(request.getfixturevalue(fixture), dtype="float64")
    model = RaggedCausalLM(hf_model)
    ids = tok("Using the numbers [19, 36, 55, 7], create an equation").input_ids
    other = tok("The capital of France is").input_ids
    with torch.no_grad():
        ref = hf_model(torch.tensor([ids])).logits[0]  # [len, vocab]
        ref_other = hf_model(torch.tensor([other])).logits[0]
    pool = model.new_pool()
    split = 5
    # step 1: a prefill chunk (row 0) beside a whole prompt (row 1)
    first = model.forward(
        pool, [RaggedItem(0, ids[:split], list(range(split))), RaggedItem(1, other, [len(other) - 1])]
    )
    # step 2: the rest of `ids` after its cached prefix (offset causal mask) beside a decode token; the pool
    # grows (rows and capacity) on the way
    rest = ids[split:]
    second = model.forward(pool, [RaggedItem(0, rest, list(range(len(rest)))), RaggedItem(1, [7], [0])])
    torch.testing.assert_close(torch.cat([first[0], second[0]]), ref.float(), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(first[1][0], ref_other[-1].float(), atol=1e-9, rtol=1e-9)
    assert pool.lengths[:2] == [len(ids), len(other) + 1]
    # step 3: batched decode over rows 0, 2 and 1 (row 2 starts from a copy of row 1's cached prefix)
    pool.reserve(3, 64)
    pool.load(2, pool.save(1), len(other))
    third = model.forward(pool, [RaggedItem(0, [9], [0]), RaggedItem(2, [11], [0]), RaggedItem(1, [12], [0])])
    with torch.no_grad():
        ref_a = hf_model(torch.tensor([[*ids, 9]])).logits[0, -1]
        ref_b = hf_model(torch.tensor([[*other, 11]])).logits[0, -1]
        ref_c = hf_model(torch.tensor([[*other, 7, 12]])).logits[0, -1]
    for got, want in zip(third, (ref_a, ref_b, ref_c)):
        torch.testing.assert_close(got[0], want.float(), atol=1e-9, rtol=1e-9)


def test_unsupported_architecture_is_named(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        RaggedCausalLM(model)


def test_stale_values_beyond_a_rows_length_do_not_leak_into_decoding(tiny_model_dir):
    """Positions past a row's length are masked (weight 0). The pool keeps them finite, so 0 * value = 0:
    grown memory is zeroed (uninitialized memory could hold NaN, and 0 * NaN = NaN), and a reused row only
    holds stale finite keys and values."""
    hf_model, tok, _ = load_model_and_tokenizer(tiny_model_dir, dtype="float64")
    model = RaggedCausalLM(hf_model)
    ids = tok("The capital of France").input_ids

    def run(stale):
        pool = model.new_pool()
        model.forward(pool, [RaggedItem(0, ids, [len(ids) - 1]), RaggedItem(1, ids[:3], [2])])
        assert all(bool((layer[:, 0, :, len(ids) :] == 0).all()) for layer in pool.data)  # zeroed growth
        if stale:
            with torch.inference_mode():  # the pool's tensors are inference tensors
                for layer in pool.data:
                    layer[:, 0, :, len(ids) :] = 1e4  # what an earlier, longer sequence may have left
                    layer[:, 1, :, 3:] = -1e4
        return model.forward(pool, [RaggedItem(0, [7], [0]), RaggedItem(1, [8], [0])])

    for clean, dirty in zip(run(False), run(True)):
        assert bool(torch.isfinite(dirty).all())
        torch.testing.assert_close(dirty, clean, atol=1e-9, rtol=1e-9)


def test_the_pool_grows_in_small_steps_up_to_its_row_limit(tiny_model_dir):
    """Rows grow in steps of ROW_STEP but never past max_rows, positions in steps of CAPACITY_STEP (no
    doubling: the pool's size is what the live sequences need), and a growth keeps every filled position."""
    hf_model, tok, _ = load_model_and_tokenizer(tiny_model_dir, dtype="float64")
    model = RaggedCausalLM(hf_model)
    pool = model.new_pool(max_rows=5)
    ids = tok("The capital of France").input_ids
    model.forward(pool, [RaggedItem(0, ids, [len(ids) - 1])])
    before = pool.save(0).data.clone()
    assert (pool.rows, pool.capacity) == (5, 64)
    pool.reserve(5, 65)
    assert (pool.rows, pool.capacity) == (5, 128)
    torch.testing.assert_close(pool.save(0).data, before, atol=0, rtol=0)
    pool.reserve(7, 0)  # past max_rows only as far as asked
    assert pool.rows == 7
    per_position = model.kv_bytes_per_token()
    assert pool.nbytes() == 7 * 128 * per_position


def test_the_engines_memory_budget_follows_the_model_and_the_live_sequences(tiny_model_dir):
    from latr_sglang.engines.torch_engine import CACHE_TOKENS_PER_SEQUENCE, memory_budget

    hf_model, _, _ = load_model_and_tokenizer(tiny_model_dir)
    per_token = RaggedCausalLM(hf_model).kv_bytes_per_token()
    small = memory_budget(hf_model, per_token, 4, None)
    large = memory_budget(hf_model, per_token, 1024, None)
    assert small["prefix_cache_tokens"] == 4 * CACHE_TOKENS_PER_SEQUENCE  # live sequences decide
    assert large["prefix_cache_tokens"] == 64 * 2**20 // per_token  # capped by max(weights, 64 MiB)
    assert memory_budget(hf_model, per_token, 4, 2.0)["prefix_cache_mb"] == 2.0
    with pytest.raises(ValueError, match="prefix_cache_mb=-1"):
        memory_budget(hf_model, per_token, 4, -1)
