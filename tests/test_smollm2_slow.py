"""The real embedded model (SmolLM2-135M-Instruct). Slow: run with `make test-all` or `pytest -m slow`."""

import pytest
import torch

from latr_sglang.config import LATRConfig
from latr_sglang.driver import LATRSampler
from latr_sglang.engines.base import GenerateRequest, SamplingParams
from latr_sglang.engines.torch_engine import TorchEngine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    engine = TorchEngine.from_pretrained("smollm2")
    yield engine
    engine.close_sync()


def chat(engine, text):
    return tuple(
        engine.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=True, add_generation_prompt=True, return_dict=False
        )
    )


def test_greedy_equals_hf_generate_and_answers(smollm2):
    prompt = chat(smollm2, "What is the capital of France?")
    out = smollm2.generate_sync(
        [GenerateRequest(prompt, SamplingParams(max_new_tokens=12, temperature=0.0))]
    )[0]
    with torch.no_grad():
        ref = smollm2.hf_model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12)[
            0, len(prompt) :
        ]
    assert out.output_ids == ref.tolist()[: len(out.output_ids)]
    assert "Paris" in smollm2.tokenizer.decode(out.output_ids)


def test_latr_on_smollm2_keeps_its_invariants(smollm2):
    tok = smollm2.tokenizer
    cfg = LATRConfig.preset("countdown", tau_abs=0.1, tau_rel=0.5, lookahead_steps=(8, 16))
    sampler = LATRSampler(
        smollm2, cfg, SamplingParams(max_new_tokens=48), smollm2.eos_ids, lambda t: tok.decode([t])
    )
    prompts = [list(chat(smollm2, "Name three colors.")), list(chat(smollm2, "Count from 1 to 5."))]
    for group in sampler.sample_sync(prompts, 4, eta=1.0):
        assert len(group.trajectories) == 4
        for t in group.trajectories:
            assert 1 <= len(t.token_ids) == len(t.logprobs) <= 48
