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
    kv_a, kv_b = model.new_kv(2), model.new_kv(2)  # tiny capacity: forces buffer growth
    split = 5
    first = model.forward(
        [RaggedItem(kv_a, ids[:split], list(range(split))), RaggedItem(kv_b, other, [len(other) - 1])]
    )
    # second step: the rest of `ids` after a cached prefix (needs an offset causal mask), beside a decode
    # token
    rest = ids[split:]
    second = model.forward([RaggedItem(kv_a, rest, list(range(len(rest)))), RaggedItem(kv_b, [7], [0])])
    torch.testing.assert_close(torch.cat([first[0], second[0]]), ref.float(), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(first[1][0], ref_other[-1].float(), atol=1e-9, rtol=1e-9)
    assert kv_a.length == len(ids) and kv_b.length == len(other) + 1


def test_unsupported_architecture_is_named(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        RaggedCausalLM(model)
