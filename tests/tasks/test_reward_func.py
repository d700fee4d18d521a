"""The reward file as OpenRLHF loads it (spec_from_file_location) and calls it (from worker threads)."""

import concurrent.futures
import importlib.util
import json
import re

import pytest
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


def _countdown_case():
    problem = generate(1, seed=5)[0]
    return (
        problem,
        problem.prompt("chat"),
        problem.label(),
    )  # the chat prompt shows "<answer> (1 + 2) / 3 </answer>"


def test_a_query_that_does_not_contain_its_prompt_is_refused_not_guessed(caplog):
    """The prompt's own example answer must never be scored as the response."""
    reward_func = load_as_openrlhf_does()
    problem, prompt, label = _countdown_case()
    altered = prompt.replace("Using", "using", 1)  # the decoded query differs by one character
    cases = [
        altered + " I give up",  # would score the example answer (0.1) if the whole query were scored
        altered + f" <answer>{problem.solution}</answer>",  # even a right answer: where it starts is unknown
        prompt[5:] + " I give up",  # a prompt truncated from the left
    ]
    with caplog.at_level("WARNING"):
        out = reward_func(cases, [prompt] * 3, [label] * 3)
    assert out["rewards"].tolist() == [0.0, 0.0, 0.0]
    assert out["extra_logs"]["response_unaligned"].tolist() == [1.0, 1.0, 1.0]
    assert "does not contain the prompt" in caplog.text


def test_token_boundaries_given_as_responses_are_used():
    reward_func = load_as_openrlhf_does()
    problem, prompt, label = _countdown_case()
    altered = prompt.replace("Using", "using", 1)
    out = reward_func(
        [altered + f" <answer>{problem.solution}</answer>", altered + " I give up"],
        [prompt, prompt],
        [label, label],
        responses=[f" <answer>{problem.solution}</answer>", " I give up"],
    )
    assert out["rewards"].tolist() == [1.0, 0.0] and out["scores"].tolist() == [1.0, 0.0]
    assert out["extra_logs"]["response_unaligned"].tolist() == [0.0, 0.0]


def test_a_special_token_before_the_prompt_is_skipped():
    reward_func = load_as_openrlhf_does()
    problem, prompt, label = _countdown_case()
    out = reward_func(["<|im_start|>" + prompt + " I give up"], [prompt], [label])
    assert out["rewards"].tolist() == [0.0]  # the example answer in the prompt was not scored
    out = reward_func(["<|im_start|>" + prompt + f"<answer>{problem.solution}</answer>"], [prompt], [label])
    assert out["rewards"].tolist() == [1.0]


def test_through_a_real_tokenizer_that_does_and_one_that_does_not_round_trip():
    """What OpenRLHF does: decode(prompt tokens + response tokens). A byte-level BPE round-trips the prompt;
    one with a Unicode normalizer (NFKC: "…" becomes "...") does not, and the sample is refused (or scored
    from `responses`)."""
    import copy

    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast

    from latr_sglang.tiny import make_tiny_tokenizer

    reward_func = load_as_openrlhf_does()
    problem, prompt, label = _countdown_case()
    prompt = prompt + " Think… then answer."
    response = f" ok <answer>{problem.solution}</answer>"
    exact = make_tiny_tokenizer()
    backend = copy.deepcopy(exact.backend_tokenizer)
    backend.normalizer = normalizers.NFKC()
    normalizing = PreTrainedTokenizerFast(tokenizer_object=backend)
    for tok, aligned in [(exact, True), (normalizing, False)]:
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tok(response, add_special_tokens=False)["input_ids"]
        query = tok.decode(prompt_ids + response_ids, skip_special_tokens=False)
        out = reward_func([query], [prompt], [label])
        assert out["rewards"].tolist() == ([1.0] if aligned else [0.0])
        assert out["extra_logs"]["response_unaligned"].tolist() == [0.0 if aligned else 1.0]
        decoded = tok.decode(response_ids, skip_special_tokens=False)
        assert reward_func([query], [prompt], [label], responses=[decoded])["rewards"].tolist() == [1.0]


def test_a_prompt_that_is_not_text_is_not_guessed_around():
    reward_func = load_as_openrlhf_does()
    label = json.dumps({"numbers": [1], "target": 1})
    out = reward_func(["<answer>1</answer>"] * 3, [None, 5, ""], [label] * 3)
    assert out["rewards"].tolist() == [0.0, 0.0, 1.0]  # an empty prompt: the query is all response


def test_lists_of_different_lengths_are_refused_naming_the_lengths():
    """A caller bug, not model output: zip() would silently score only the first samples (F4)."""
    import pytest

    reward_func = load_as_openrlhf_does()
    with pytest.raises(ValueError, match="queries 4, prompts 4, labels 2"):
        reward_func(["Q\nAnswer: 5"] * 4, ["Q\n"] * 4, ["5"] * 2)
    with pytest.raises(ValueError, match="responses 3"):
        reward_func(["Q\nAnswer: 5"] * 4, ["Q\n"] * 4, ["5"] * 4, responses=["Answer: 5"] * 3)
    with pytest.raises(ValueError, match="queries must be a list"):
        reward_func("Q\nAnswer: 5", "Q\n", "5")  # strings would be zipped one character at a time
    out = reward_func(["Q\nAnswer: 5"] * 4, ["Q\n"] * 4, ["5"] * 4, responses=["Answer: 5"] * 4)
    assert out["rewards"].tolist() == [1.0] * 4
    assert reward_func([], [], [])["rewards"].shape == (0,)


def test_integer_strings_in_a_countdown_label_are_converted_and_garbage_is_named():
    """JSON datasets store numbers as strings: a correct answer must not score as wrong (F12)."""
    import pytest

    from latr_sglang.tasks.reward_func import check_label, score_response

    answer = "<answer>55 + 36 - 19 - 7</answer>"
    for label in (
        {"numbers": [19, 36, 55, 7], "target": "65"},
        {"numbers": ["19", "36", "55", "7"], "target": 65},
        json.dumps({"numbers": ["19", "36", "55", "7"], "target": 65.0}),
    ):
        assert score_response(answer, label)[:2] == (1.0, 1.0), label
    assert check_label({"numbers": ["19", 36], "target": " 65 "}) == {"numbers": [19, 36], "target": 65}
    assert check_label("{1, 2}") == "{1, 2}" and check_label(42) == "42"  # a set; an int answer
    for bad, needle in [
        ({"numbers": "x", "target": 3}, "label.numbers='x'"),
        ({"numbers": [1, "a"], "target": 3}, r"label.numbers\[1\]='a'"),
        ({"numbers": [1], "target": 6.5}, "label.target=6.5"),
        ({"numbers": [1]}, "no target"),
        (None, "label=None"),
        ("  ", "empty math answer"),
    ]:
        with pytest.raises(ValueError, match=needle):
            check_label(bad)
        assert score_response(answer, bad)[:2] == (0.0, 0.0)  # at scoring time: 0, never an exception


def test_a_script_without_the_main_guard_gets_an_error_not_zero_rewards(tmp_path):
    """The verifier's workers are spawned and import the main script again: a script that starts them at
    module level makes every worker exit while starting. Every math answer then scored 0 with a warning; now
    the reward raises once, saying the guard is needed."""
    import subprocess
    import sys

    script = tmp_path / "no_guard.py"
    script.write_text(
        "from latr_sglang.tasks import math as m\n"
        "from latr_sglang.tasks.reward_func import reward_func\n"
        "m.warm_up()\n"
        "print('SCORES', reward_func(['Q\\nAnswer: \\\\sqrt{4}'], ['Q'], ['2'])['scores'].tolist())\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0 and "SCORES" not in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "WorkersCannotStart" in proc.stderr and 'if __name__ == "__main__":' in proc.stderr, proc.stderr[
        -2000:
    ]


def test_a_countdown_label_with_a_typo_or_cut_off_is_refused_not_taken_as_math(caplog):
    """'{"Numbers": ...}' or truncated JSON used to become a math answer that no response matches: every
    sample scored 0, silently. check_label refuses it (the loaders name the row); the reward scores it 0."""
    from latr_sglang.tasks.reward_func import check_label, score_response

    for label, needle in [
        ('{"Numbers": [3, 5], "Target": 8}', "without 'numbers' and 'target'"),
        ('{"numbers": [3,5], "target": 8', "not valid JSON"),
        ("{'numbers': [3, 5], 'target': 8}", "not valid JSON"),
        ('  {"numbers": [3, 5]}', "no target"),
    ]:
        try:
            check_label(label)
        except ValueError as e:
            assert needle in str(e) and "label" in str(e), (label, e)
        else:
            raise AssertionError(f"{label!r} was accepted")
        assert score_response("<answer>3 + 5</answer>\nAnswer: 8", label)[0] == 0.0
    # math answers that start with a brace stay math answers
    assert check_label("{1, 2}") == "{1, 2}" and check_label("{}") == "{}"
    assert check_label('{"numbers": ["3", 5], "target": 8}') == {"numbers": [3, 5], "target": 8}


def test_bad_labels_are_named_in_a_short_message():
    from latr_sglang.tasks.reward_func import check_label

    for label in ([1] * 200_000, {"numbers": "x" * 10**6, "target": 1}, 10**5000, [[[[]]]] * 10**4):
        try:
            check_label(label)
        except ValueError as e:
            assert len(str(e)) < 300 and str(e).startswith("label"), str(e)[:400]
        else:
            raise AssertionError("accepted")


def test_labels_no_response_could_match_are_refused_when_the_data_is_checked():
    from latr_sglang.tasks.reward_func import check_label

    for label, needle in (
        ("$", "nothing is left of this math answer once normalized"),
        ("  units ", "nothing is left"),
        ({"numbers": [-3, 5], "target": 2}, "label.numbers[0]=-3: countdown numbers are integers >= 0"),
    ):
        with pytest.raises(ValueError, match=re.escape(needle)):
            check_label(label)
    assert check_label({"numbers": [0, 5], "target": 5}) == {"numbers": [0, 5], "target": 5}
