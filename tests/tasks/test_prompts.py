"""Prompt files (read_jsonl, iter_jsonl): every bad file or row named by file and line, at load time."""

import json

import pytest

from latr_sglang.tasks.prompts import (
    builtin_distinct_problems,
    iter_jsonl,
    load_prompts,
    read_jsonl,
    task_problems,
    unicode_error,
)


def write(tmp_path, text: str | bytes):
    path = tmp_path / "p.jsonl"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        # a lone surrogate: JSON allows the escape, no tokenizer can encode it
        (
            '{"prompt": "a\\ud800b", "label": "3"}\n',
            "p.jsonl:1: prompt is not valid Unicode (lone surrogate at 1)",
        ),
        ('{"prompt": "ok", "label": "3"}\n"prompt label"\n', "p.jsonl:2: expected a JSON object"),
        ("5\n", "p.jsonl:1: expected a JSON object"),
        ('[{"prompt": "a"}]\n', "p.jsonl:1: expected a JSON object"),
        (b'{"prompt": "ok", "label": "3"}\n{"prompt": "\xff"}\n', "p.jsonl:2: not valid UTF-8 (byte 0xff"),
        ('{"prompt": "ok", "label": "3"}\n\n{bad\n', "p.jsonl:3: not valid JSON"),
        ('{"prompt": "x", "label": ' + "1" * 5000 + "}\n", "p.jsonl:1: not valid JSON"),
        ("[" * 100_000 + "\n", "p.jsonl:1: not valid JSON"),
        ('{"prompt": ""}\n', "p.jsonl:1: no non-empty str under key 'prompt'"),
        ("\n\n", "p.jsonl: no prompts"),
    ],
)
def test_a_bad_prompt_file_is_named_by_file_and_line(tmp_path, content, needle):
    path = write(tmp_path, content)
    with pytest.raises(ValueError) as error:
        read_jsonl(path, {"prompt": str, "label": object})
    assert needle in str(error.value), str(error.value)[:300]
    assert len(str(error.value)) < 300 + len(str(path))


def test_rows_must_be_objects_even_when_no_key_is_required(tmp_path):
    with pytest.raises(ValueError, match=r"p.jsonl:1: expected a JSON object"):
        read_jsonl(write(tmp_path, "5\n"), {})
    with pytest.raises(ValueError, match=r"p.jsonl:1: expected a JSON object"):
        list(iter_jsonl(write(tmp_path, '"prompt label"\n')))


def test_good_rows_load_with_their_line_numbers(tmp_path):
    path = write(
        tmp_path, json.dumps({"prompt": "é ✓ \u2028 x"}) + "\n\n" + json.dumps({"prompt": "b"}) + "\n"
    )
    assert [line for line, _ in iter_jsonl(path)] == [1, 3]
    assert load_prompts(path) == ["é ✓ \u2028 x", "b"]
    raw = write(tmp_path, json.dumps({"prompt": "a\u2028b\x85c"}, ensure_ascii=False) + "\r\n")
    assert load_prompts(raw) == ["a\u2028b\x85c"]  # JSONL lines end at \n only
    assert unicode_error("fine \U0001f600") is None
    assert unicode_error("x\udfff") == "not valid Unicode (lone surrogate at 1)"


def test_the_distinct_problem_count_matches_the_generators():
    def count(task, max_number, countdown_numbers):
        return builtin_distinct_problems(task, max_number, countdown_numbers, limit=4096)

    def distinct(task, **options):
        return len({(tuple(sorted(json.loads(lab)["numbers"])), json.loads(lab)["target"])
                    for _, lab in task_problems(task, 20_000, 3, **options)})  # fmt: skip

    for m in (2, 5, 12):
        assert count("countdown-fewshot", m, (3, 4)) == distinct("countdown-fewshot", max_number=m)
    assert count("countdown", 12, (1, 1)) == distinct("countdown", min_numbers=1, max_numbers=1)
    assert count("countdown", 12, (2, 3)) is None
    assert count("countdown-fewshot", 10**12, (3, 4)) is None  # counted without a loop
    assert count("countdown-fewshot", 60, (3, 4)) is None  # counted, but over the limit


def test_asking_for_the_chat_template_of_a_tokenizer_without_one_warns_and_encodes_raw(tiny_model_dir):
    from transformers import AutoTokenizer

    from latr_sglang.tasks.prompts import encode_prompts

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    with pytest.warns(UserWarning, match="has no chat template: prompts are encoded as raw text"):
        ids = encode_prompts(tok, ["What is 1+1?"], chat=True)
    assert ids == [list(tok("What is 1+1?").input_ids)]
