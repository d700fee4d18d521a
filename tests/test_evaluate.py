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
    with pytest.raises(ValueError, match="row 1"):
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
        ({"problem": "1+1?", "answer": None}, "row 1: answer: label=None"),
        ({"prompt": ["a"], "label": "2"}, "row 1: prompt=['a']: must be a non-empty string"),
        ({"prompt": "x", "label": {"numbers": "x", "target": 3}}, "row 1: label:"),
    ],
)
def test_an_eval_row_with_a_bad_answer_or_prompt_is_named(tmp_path, row, needle):
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=re.escape(needle)):
        load_eval_set(str(path))


def test_a_numeric_math_answer_stays_the_gold_answer(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "answer": 2}) + "\n")
    assert load_eval_set(str(path))[0].label == "2"
