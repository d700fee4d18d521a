"""latr-sglang eval: n samples per prompt on a real engine, scored by the task reward."""

import json
import re
import subprocess
import sys

import pytest

from latr_sglang.engines.base import SamplingParams
from latr_sglang.evaluate import DATASETS, EvalItem, evaluate, final_answer, load_eval_set


def test_bundled_sets_load_with_prompts_and_labels():
    for name in DATASETS:
        items = load_eval_set(name, limit=3)
        assert len(items) == 3 and all(it.prompt and it.label is not None for it in items), name
    assert "Answer:" in load_eval_set("math500", 1)[0].prompt  # MATH rows get DAPO's instruction


def test_unknown_dataset_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_eval_set("nope")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: the row has neither prompt/label nor problem/answer"):
        load_eval_set(str(bad))


def test_final_answers_are_normalized_per_task():
    label = '{"numbers": [1, 2, 3], "target": 6}'
    assert final_answer("<answer> 1 +  2 + 3 </answer>", label) == "1 + 2 + 3"
    assert final_answer("no answer", label) is None
    assert final_answer("so \\boxed{\\frac{1}{2}}", "\\frac12") is not None


def test_metrics_on_the_tiny_engine(tiny_engine):
    items = [
        EvalItem(
            "Using the numbers [1, 2], create an equation that equals 3.", '{"numbers": [1, 2], "target": 3}'
        )
    ]
    items *= 3

    def run():
        sampling = SamplingParams(max_new_tokens=6)
        return evaluate(tiny_engine, tiny_engine.tokenizer, items, n=4, sampling=sampling, progress=False)

    metrics = run()
    assert metrics["prompts"] == 3 and metrics["n"] == 4
    assert {"pass@1", "pass@2", "pass@4", "mean@4", "distinct_answers_mean", "response_length_mean"} <= set(
        metrics
    )
    assert 0 <= metrics["pass@1"] <= metrics["pass@2"] <= metrics["pass@4"] <= 1
    assert 1 <= metrics["response_length_mean"] <= 6
    # seeded: the same call gives the same numbers
    again = run()
    assert again["response_length_mean"] == metrics["response_length_mean"]


def test_eval_cli_writes_results(tmp_path, tiny_model_dir):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "latr_sglang.cli", "eval", "--model", str(tiny_model_dir),
         "--dataset", "amc23", "--limit", "2", "--n", "2", "--max-new-tokens", "4", "--output", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["dataset"] == "amc23" and result["prompts"] == 2 and "pass@2" in result


def test_bundled_sets_are_found():
    from latr_sglang.evaluate import DATASETS, EVAL_DIR

    assert all((EVAL_DIR / name).is_file() for name in DATASETS.values())


def test_zero_new_tokens_is_refused_not_scored():
    with pytest.raises(ValueError, match="max_new_tokens=0: responses need >= 1 token"):
        evaluate(None, None, [], n=2, sampling=SamplingParams(max_new_tokens=0), progress=False)


@pytest.mark.parametrize(
    "row, needle",
    [
        ({"problem": "1+1?", "answer": None}, "set.jsonl:1: answer: label=None"),
        ({"prompt": ["a"], "label": "2"}, "set.jsonl:1: prompt=['a']: must be a non-empty string"),
        ({"prompt": "x", "label": {"numbers": "x", "target": 3}}, "set.jsonl:1: label:"),
        # rows that are not objects (M6)
        ("prompt label", "set.jsonl:1: expected a JSON object"),
        (5, "set.jsonl:1: expected a JSON object"),
        # a lone surrogate: no tokenizer can encode it (M5)
        (
            {"prompt": "a\ud800b", "label": "3"},
            "set.jsonl:1: prompt is not valid Unicode (lone surrogate at 1)",
        ),
        (
            {"problem": "\udfffx", "answer": "3"},
            "set.jsonl:1: problem is not valid Unicode (lone surrogate at 0)",
        ),
        # non-finite numbers are no answer: NaN became the gold answer "nan" (L4)
        ({"problem": "p", "answer": float("nan")}, "set.jsonl:1: answer=nan: not a finite number"),
        ({"problem": "p", "answer": float("-inf")}, "set.jsonl:1: answer=-inf: not a finite number"),
        ({"prompt": "p", "label": float("nan")}, "set.jsonl:1: label: label=nan"),
        # a typo in a countdown label's keys made it a math answer (M4)
        ({"prompt": "p", "label": '{"Numbers": [3, 5], "Target": 8}'}, "set.jsonl:1: label: label="),
    ],
)
def test_an_eval_row_with_a_bad_answer_or_prompt_is_named(tmp_path, row, needle):
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps(row) + "\n")  # NaN and Infinity as Python's json writes them
    with pytest.raises(ValueError, match=re.escape(needle)):
        load_eval_set(str(path))


def test_a_huge_bad_value_gives_a_short_message(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"prompt": list(range(200_000)), "label": "3"}) + "\n")
    with pytest.raises(ValueError, match=r"set.jsonl:1: prompt=\[0, 1, 2, .*\.\.\.: must be") as error:
        load_eval_set(str(path))
    assert len(str(error.value)) < 200 + len(str(path))


def test_a_non_utf8_eval_file_is_named_with_its_line(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_bytes(b'{"prompt": "p", "label": "3"}\n{"prompt": "\xff", "label": "3"}\n')
    with pytest.raises(ValueError, match=r"set.jsonl:2: not valid UTF-8"):
        load_eval_set(str(path))


def test_a_run_config_value_of_the_wrong_type_is_named():
    """`latr-sglang eval --run D` reads D/config.json into the trainer's config class:
    `"countdown_numbers": 5` gave "TypeError: cannot unpack non-iterable int object" (L8)."""
    from dataclasses import dataclass, field
    from typing import Literal

    from latr_sglang.evaluate import check_config_types

    @dataclass
    class Config:
        countdown_numbers: tuple[int, int] = (3, 4)
        algo: Literal["grpo", "dapo"] = "dapo"
        prompts: str | None = None
        lr: float = 1e-6
        chat: bool = True
        steps: int = 10
        names: list[str] = field(default_factory=list)

    good = {"countdown_numbers": [3, 4], "algo": "grpo", "prompts": None, "lr": 1, "chat": False, "other": 5}
    check_config_types(Config, {**good, "steps": 3, "names": ["a"]}, "D/config.json", "train.")
    for key, value, expected in [
        ("countdown_numbers", 5, "a list of 2: [an integer, an integer]"),
        ("countdown_numbers", [3, "4"], "a list of 2"),
        ("algo", "ppo", "one of 'grpo', 'dapo'"),
        ("prompts", 3, "a string or null"),
        ("lr", "fast", "a number"),
        ("chat", 1, "true or false"),
        ("steps", True, "an integer"),
        ("names", "a", "a list, each a string"),
    ]:
        with pytest.raises(ValueError) as error:
            check_config_types(Config, {key: value}, "D/config.json", "train.")
        assert str(error.value).startswith(f"D/config.json: train.{key}={value!r}: expected {expected}"), (
            error.value
        )


def test_the_local_trainers_config_class_is_checked_as_a_run_writes_it():
    pytest.importorskip("openrlhf_ext.local.config")
    import dataclasses

    from latr_sglang.evaluate import check_config_types
    from openrlhf_ext.local.config import LocalTrainConfig

    written = json.loads(json.dumps(dataclasses.asdict(LocalTrainConfig())))  # tuples become lists
    check_config_types(LocalTrainConfig, written, "config.json", "train.")
    with pytest.raises(ValueError, match=r"config.json: train.countdown_numbers=5: expected a list of 2"):
        check_config_types(LocalTrainConfig, {**written, "countdown_numbers": 5}, "config.json", "train.")


def test_a_numeric_math_answer_stays_the_gold_answer(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "answer": 2}) + "\n")
    assert load_eval_set(str(path))[0].label == "2"
