"""The reward file as OpenRLHF loads it (spec_from_file_location) and calls it (from worker threads)."""

import concurrent.futures
import importlib.util
import json

import torch

import latr_sglang.tasks.reward_func as reward_module
from latr_sglang.tasks.countdown import generate


def load_as_openrlhf_does():
    spec = importlib.util.spec_from_file_location("reward_func", reward_module.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reward_func


def test_countdown_and_math_from_worker_threads():
    reward_func = load_as_openrlhf_does()
    problem = generate(1, seed=3)[0]
    prompt = problem.prompt("raw")  # its instructions contain an example <answer> ... </answer>
    label = problem.label()
    cases = [
        (prompt + f" ok <answer>{problem.solution}</answer>", prompt, label, 1.0, 1.0),
        (prompt + " <answer>1 + 1</answer>", prompt, label, 0.1, 0.0),
        (prompt + " I give up", prompt, label, 0.0, 0.0),
        ("Q: 1+1?\nAnswer: 2", "Q: 1+1?", "2", 1.0, 1.0),
        ("Q: 1+1?\nAnswer: 3", "Q: 1+1?", "2", 0.0, 0.0),
        ("Q\nAnswer: 1", "Q", {"numbers": [1], "target": 1}, 0.0, 0.0),  # a dict label; no <answer> tags
    ]

    def call(case):
        query, p, lab, _, _ = case
        return reward_func([query], [p], [lab])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(call, cases))
    for out, (_, _, _, reward, accuracy) in zip(outs, cases):
        assert set(out) == {"rewards", "scores", "extra_logs"}
        assert isinstance(out["rewards"], torch.Tensor)
        assert out["rewards"].tolist() == [reward] or abs(out["rewards"].item() - reward) < 1e-6
        assert out["scores"].tolist() == [accuracy]


def test_batch_and_garbage_labels():
    reward_func = load_as_openrlhf_does()
    out = reward_func(["a", "b", None], ["", "", ""], [json.dumps({"numbers": "x"}), None, "5"])
    assert out["rewards"].tolist() == [0.0, 0.0, 0.0] and out["scores"].shape == (3,)
