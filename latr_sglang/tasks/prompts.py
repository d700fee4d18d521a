"""Prompt I/O: reading prompt files, encoding prompts for an engine, and the built-in tasks' problem sets.

The trainer, the evaluator and the `sample` CLI all read and encode prompts here, so a prompt is tokenized
the same way wherever it is sampled, trained on or scored.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

TASKS = ("countdown-fewshot", "countdown")


def unicode_error(text: str) -> str | None:
    """Why `text` cannot be encoded (so no tokenizer can take it), else None. JSON allows escapes like
    "\\ud800": a lone surrogate, which Python keeps in a str but UTF-8 cannot hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"not valid Unicode (lone surrogate at {e.start})"
    return None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) of each non-blank line of a JSONL file; a ValueError naming the file and the line
    for bytes that are not UTF-8, a line that is not JSON, or a row that is not a JSON object."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at byte {e.start} of the file)"
        ) from None
    # lines end at \n only: str.splitlines() would also split at U+2028 or U+0085, which JSON allows raw
    # inside a string (a file written with ensure_ascii=False)
    for i, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i + 1}: not valid JSON ({e.msg} at column {e.colno})") from None
        except (ValueError, RecursionError) as e:  # an integer of > 4300 digits, arrays nested too deeply
            reason = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(":")[0]
            raise ValueError(f"{path}:{i + 1}: not valid JSON ({reason})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i + 1}: expected a JSON object ({{...}}), got a {_json_kind(row)}")
        yield i + 1, row


def _json_kind(value: Any) -> str:
    kinds = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def read_jsonl(path: str | Path, required: dict[str, type]) -> list[dict]:
    """Rows of a JSONL file, each a JSON object holding the required keys with values of the given types (a
    required string must also be valid Unicode: a tokenizer cannot encode a lone surrogate). Errors name the
    file and the line."""
    rows = []
    for line, row in iter_jsonl(path):
        for key, kind in required.items():
            value = row.get(key)
            if not isinstance(value, kind) or value in ("", None):
                raise ValueError(f"{path}:{line}: no non-empty {kind.__name__} under key {key!r}")
            if isinstance(value, str) and (problem := unicode_error(value)):
                raise ValueError(f"{path}:{line}: {key} is {problem}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


def load_prompts(path: str | Path, input_key: str = "prompt") -> list[str]:
    return [row[input_key] for row in read_jsonl(path, {input_key: str})]


def encode_prompts(
    tokenizer: Any, texts: Sequence[str], chat: bool, response_prefix: str = ""
) -> list[list[int]]:
    """Prompt ids (in the chat template when `chat`), followed by the ids of `response_prefix`: text the
    assistant's turn starts with (a prefill)."""
    prefix = list(tokenizer(response_prefix, add_special_tokens=False).input_ids) if response_prefix else []
    if chat and not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        warnings.warn(
            f"the tokenizer of {name} has no chat template: prompts are encoded as raw text (to ask for "
            "that: latr-sglang --no-chat-template; latr-train without --data.apply_chat_template)",
            stacklevel=2,
        )
    if chat and getattr(tokenizer, "chat_template", None):
        return [
            list(
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": t}],
                    add_generation_prompt=True,
                    tokenize=True,
                    return_dict=False,
                )
            )
            + prefix
            for t in texts
        ]
    return [list(tokenizer(t).input_ids) + prefix for t in texts]


def newline_token_ids(tokenizer: Any) -> tuple[int, ...]:
    """Every token whose text holds a newline: stopping on them ends a one-line answer (SGLang's `stop`
    matches text; the LATR driver ends branches on token ids, so the stop is given as ids)."""
    return tuple(i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i]))


def _key(label: str) -> tuple:
    problem = json.loads(label)
    return tuple(sorted(problem["numbers"])), problem["target"]


def task_problems(
    task: str,
    count: int,
    seed: int,
    *,
    chat: bool = True,
    min_numbers: int = 3,
    max_numbers: int = 4,
    max_number: int = 12,
) -> list[tuple[str, str]]:
    """(prompt, label) pairs of a built-in task. countdown-fewshot: two numbers in 1..max_number, the raw
    few-shot prompt; countdown: the paper's prompt (chat or raw), min..max numbers in 1..100."""
    if task == "countdown-fewshot":
        from latr_sglang.tasks import countdown_fewshot

        problems = countdown_fewshot.generate(count, seed=seed, max_number=max_number)
        return [(countdown_fewshot.prompt(p.numbers, p.target), p.label()) for p in problems]
    if task == "countdown":
        from latr_sglang.tasks.countdown import MAX_NUMBERS, generate

        if not 1 <= min_numbers <= max_numbers <= MAX_NUMBERS:
            raise ValueError(
                f"countdown_numbers={min_numbers},{max_numbers}: the countdown task has 1..{MAX_NUMBERS} "
                "numbers per problem (min <= max); more would take minutes to hours to generate"
            )

        problems = generate(count, seed=seed, min_numbers=min_numbers, max_numbers=max_numbers)
        return [(p.prompt("chat" if chat else "raw"), p.label()) for p in problems]
    raise ValueError(f"task={task!r}: expected one of {', '.join(TASKS)}")


def builtin_distinct_problems(
    task: str, max_number: int, countdown_numbers: tuple[int, int], limit: int
) -> int | None:
    """How many distinct problems (numbers as a multiset, and target) a built-in task can draw, when that is
    at most `limit` (what a caller holding problems out can ask for), else None (more than that).
    Counted without generating any: countdown-fewshot's pairs in 1..max_number and their targets a + b,
    a - b > 0, a * b; countdown's single numbers (1..100, the number is its own target)."""
    if task == "countdown-fewshot":
        if max_number * (max_number + 1) // 2 > limit:  # each pair is >= 1 problem
            return None
        count = 0
        for a in range(1, max_number + 1):
            for b in range(a, max_number + 1):
                count += len({a + b, a * b} | ({b - a} if b > a else set()))
        return count if count <= limit else None
    if task == "countdown" and countdown_numbers[1] == 1:
        return 100 if limit >= 100 else None
    return None  # countdown with 2+ numbers: over 5000 number pairs, each makes a target in 1..100


def split_problems(
    train: Sequence[tuple[str, str]], held_out: Sequence[tuple[str, str]], eval_count: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The first `eval_count` distinct problems of `held_out`, and `train` without any of them. Problems
    are the same when their numbers (as a multiset) and target are: the order the numbers are shown in does
    not make a new problem, so no evaluated problem is ever trained on."""
    evaluation: list[tuple[str, str]] = []
    seen: set[tuple] = set()
    for prompt, label in held_out:
        if len(evaluation) == eval_count:
            break
        if _key(label) not in seen:
            seen.add(_key(label))
            evaluation.append((prompt, label))
    if len(evaluation) < eval_count:
        raise ValueError(
            f"eval_prompts={eval_count}: the task has only {len(evaluation)} distinct held-out problems here"
        )
    rest = [(p, lab) for p, lab in train if _key(lab) not in seen]
    if not rest:
        raise ValueError(f"eval_prompts={eval_count}: no training problem is left after holding these out")
    return rest, evaluation
