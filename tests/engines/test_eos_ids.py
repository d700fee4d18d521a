"""Every EOS id of a model's generation config ends a request as "stop", in the torch engine and in the EOS
list the SGLang HTTP path hands the driver (an instruct model's <|im_end|> is often only there)."""

import json

import pytest

from latr_sglang.engines.base import FinishReason, GenerateRequest, SamplingParams
from latr_sglang.engines.sglang_http import model_eos_ids
from latr_sglang.engines.torch_engine import TorchEngine
from latr_sglang.tiny import make_tiny_model


@pytest.fixture(scope="module")
def two_eos_model(tmp_path_factory):
    """A tiny model whose generation_config.json lists a second EOS id: a token its greedy decoding emits."""
    path = make_tiny_model(tmp_path_factory.mktemp("two-eos"))
    with TorchEngine.from_pretrained(str(path)) as engine:
        prompt = tuple(engine.tokenizer("The capital of").input_ids)
        out = engine.generate_sync(
            [GenerateRequest(prompt, SamplingParams(max_new_tokens=12, temperature=0.0))]
        )
        first_eos = engine.tokenizer.eos_token_id
    second = next(t for t in out[0].output_ids[3:] if t != first_eos)
    config_file = path / "generation_config.json"
    config = json.loads(config_file.read_text())
    config["eos_token_id"] = [first_eos, second]
    config_file.write_text(json.dumps(config))
    return path, prompt, first_eos, second, out[0].output_ids


def test_torch_engine_stops_on_every_generation_config_eos_id(two_eos_model):
    path, prompt, first_eos, second, plain = two_eos_model
    with TorchEngine.from_pretrained(str(path)) as engine:
        assert {first_eos, second} <= engine.eos_ids
        out = engine.generate_sync(
            [GenerateRequest(prompt, SamplingParams(max_new_tokens=12, temperature=0.0))]
        )
    end = plain.index(second) + 1
    assert out[0].output_ids == plain[:end]
    assert out[0].finish_reason == FinishReason.STOP and out[0].matched_stop == second


def test_the_sglang_eos_list_comes_from_the_generation_config(two_eos_model, tmp_path):
    path, _, first_eos, second, _ = two_eos_model
    assert model_eos_ids(str(path)) == {first_eos, second}
    # without a generation_config.json only the tokenizer's remains, as SGLang has it
    bare = make_tiny_model(tmp_path / "bare")
    (bare / "generation_config.json").unlink()
    assert model_eos_ids(str(bare)) == {first_eos}
