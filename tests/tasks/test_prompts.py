"""Prompt files (read_jsonl, iter_jsonl): every bad file or row named by file and line, at load time."""

import json

import pytest

from latr_sglang.tasks.prompts import iter_jsonl, load_prompts, read_jsonl, unicode_error


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
