import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latr_sglang.engines.base import (
    FinishReason,
    GenerateOutput,
    GenerateRequest,
    RequestError,
    SamplingParams,
)
from latr_sglang.engines.wire import (
    output_from_sglang,
    output_to_sglang,
    request_to_sglang,
    sampling_params_from_sglang,
    sampling_params_to_sglang,
)

sampling_params = st.builds(
    SamplingParams,
    max_new_tokens=st.integers(4, 4096),
    temperature=st.sampled_from([0.0, 0.6, 1.0, 1.3]),
    top_p=st.sampled_from([0.1, 0.95, 1.0]),
    top_k=st.sampled_from([-1, 1, 20]),
    min_p=st.sampled_from([0.0, 0.05]),
    sampling_seed=st.one_of(st.none(), st.integers(0, 2**31)),
    stop_token_ids=st.lists(st.integers(0, 1000), max_size=3).map(tuple),
    stop=st.lists(st.text(min_size=1, max_size=4), max_size=2).map(tuple),
    ignore_eos=st.booleans(),
    min_new_tokens=st.integers(0, 4),
)


def sglang_validate(payloads: list[dict]) -> list[dict]:
    """Runs SGLang's own GenerateReqInput + SamplingParams over the payloads (separate process)."""
    script = Path(__file__).with_name("sglang_io_check.py")
    proc = subprocess.run(
        [sys.executable, str(script)], input=json.dumps(payloads), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_our_payloads_validate_against_sglang_generate_req_input():
    import random

    rng = random.Random(0)
    examples = []
    for _ in range(60):
        sp = SamplingParams(
            max_new_tokens=rng.randrange(0, 4096),
            temperature=rng.choice([0.0, 0.6, 1.0, 1.3]),
            top_p=rng.choice([0.1, 0.95, 1.0]),
            top_k=rng.choice([-1, 1, 20]),
            min_p=rng.choice([0.0, 0.05]),
            sampling_seed=rng.choice([None, rng.randrange(2**31)]),
            stop_token_ids=tuple(rng.randrange(1000) for _ in range(rng.randrange(3))),
            stop=tuple(rng.choice(["\n", "</answer>", "Answer:"]) for _ in range(rng.randrange(3))),
            ignore_eos=rng.random() < 0.5,
            min_new_tokens=rng.randrange(4),
        )
        sp = dataclasses.replace(sp, min_new_tokens=min(sp.min_new_tokens, sp.max_new_tokens))
        ids = tuple(rng.randrange(0, 5000) for _ in range(rng.randrange(1, 30)))
        req = GenerateRequest(ids, sp, top_logprobs_num=rng.choice([0, 2, 5]))
        examples.append(request_to_sglang(req))
    # and payloads SGLang must reject, so the check is known to discriminate
    bad = [
        {"input_ids": [1], "sampling_params": {"bogus_key": 1}},
        {"input_ids": [1], "sampling_params": {"top_p": 2.0}},
    ]
    results = sglang_validate(examples + bad)
    assert all(r["ok"] for r in results[: len(examples)]), [r for r in results if not r["ok"]][:3]
    assert not any(r["ok"] for r in results[len(examples) :])


@settings(max_examples=200, deadline=None)
@given(sp=sampling_params)
def test_sampling_params_round_trip(sp):
    back, _ = sampling_params_from_sglang(sampling_params_to_sglang(sp))
    assert back == sp


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"bogus": 1}, "bogus"),
        ({"n": 4}, "sampling_params.n"),
        ({"max_new_tokens": 2, "min_new_tokens": 3}, "min_new_tokens"),
        ({"regex": "a+"}, "regex"),
        ({"stop_token_ids": 5}, "stop_token_ids"),
        ([1, 2], "object"),
    ],
)
def test_bad_sampling_params_name_the_key(raw, needle):
    with pytest.raises(RequestError, match=needle):
        sampling_params_from_sglang(raw)


def test_frontend_nulls_are_accepted():
    # What SGLang's frontend (SglSamplingParams.to_srt_kwargs) sends for a plain sgl.gen(max_tokens=8).
    sp, _ = sampling_params_from_sglang(
        {
            "max_new_tokens": 8,
            "min_new_tokens": 0,
            "n": 1,
            "stop": [],
            "stop_token_ids": [],
            "stop_regex": None,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": -1,
            "min_p": 0.0,
            "frequency_penalty": 0.0,
            "presence_penalty": 0.0,
            "ignore_eos": False,
            "regex": None,
            "json_schema": None,
            "skip_special_tokens": True,
            "spaces_between_special_tokens": True,
        }
    )
    assert sp.max_new_tokens == 8


def test_output_round_trip(tiny_engine):
    out = GenerateOutput(
        output_ids=[5, 6, 7],
        logprobs=[-0.5, -1.0, -0.1],
        top_logprobs=[[(5, -0.5), (9, -1.5)], [(6, -1.0), (3, -1.2)], [(7, -0.1), (1, -3.0)]],
        finish_reason=FinishReason.STOP,
        prompt_tokens=4,
        cached_tokens=2,
        matched_stop=7,
    )
    wire = output_to_sglang(out, tiny_engine.tokenizer, rid="x", return_logprob=True)
    assert wire["meta_info"]["finish_reason"] == {"type": "stop", "matched": 7}
    assert wire["meta_info"]["completion_tokens"] == 3
    back = output_from_sglang(json.loads(json.dumps(wire)))
    assert back.output_ids == out.output_ids and back.logprobs == out.logprobs
    assert back.top_logprobs == out.top_logprobs and back.finish_reason == out.finish_reason
    assert (back.prompt_tokens, back.cached_tokens, back.matched_stop) == (4, 2, 7)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"max_new_tokens": float("inf")}, "max_new_tokens"),
        ({"max_new_tokens": 3.0}, "max_new_tokens"),
        ({"top_k": True}, "top_k"),
        ({"min_new_tokens": False}, "min_new_tokens"),
        ({"sampling_seed": 2**64}, "sampling_seed"),
        ({"sampling_seed": -1}, "sampling_seed"),
        ({"temperature": True}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": float("inf")}, "top_p"),
        ({"ignore_eos": 1}, "ignore_eos"),
        ({"stop_token_ids": [True]}, "stop_token_ids"),
        ({"stop_token_ids": [1.5]}, "stop_token_ids"),
        ({"skip_special_tokens": "no"}, "skip_special_tokens"),
        ({"stream_interval": 0}, "stream_interval"),
    ],
)
def test_json_types_are_strict(raw, needle):
    """A bool is not an int, a float is not an int, 1e400 (inf) is no number: each is named."""
    with pytest.raises(RequestError, match=needle):
        sampling_params_from_sglang(raw)


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-7])
def test_underflowing_temperature_is_greedy(temperature):
    sp, _ = sampling_params_from_sglang({"temperature": temperature})
    assert sp.temperature == 0.0 and sp.greedy
    kept, _ = sampling_params_from_sglang({"temperature": 1e-3})
    assert kept.temperature == 1e-3


def test_named_tensors_round_trip_and_refusals():
    import base64
    import pickle

    import torch

    from latr_sglang.engines.wire import decode_named_tensors, encode_named_tensors

    tensors = {
        "a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "b": torch.ones(2, dtype=torch.bfloat16),
    }
    back = decode_named_tensors(encode_named_tensors(tensors))
    assert set(back) == {"a", "b"} and all(torch.equal(back[k], v) for k, v in tensors.items())
    for entry, needle in [
        ("not base64!", "base64"),
        (base64.b64encode(pickle.dumps(tensors["a"])).decode(), "safetensors"),
        (base64.b64encode(b"\x10\x00\x00\x00\x00\x00\x00\x00{}").decode(), "safetensors"),
        (5, "base64 string"),
    ]:
        with pytest.raises(RequestError, match=needle):
            decode_named_tensors(entry, 3)
