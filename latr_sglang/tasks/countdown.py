"""Countdown: reach a target with each given number exactly once and + - * / (the paper's main task).

Generation is solvable by construction (a random expression over the numbers fixes the target). The reward
follows the paper (TinyZero's scheme): 1.0 for a correct equation, 0.1 for a well-formed but wrong one, 0 when
there is no answer or it is not an arithmetic expression. Evaluation walks the AST over + - * / and unary
minus on integer literals with exact rational arithmetic: no eval, no powers, bounded length and depth.
"""

from __future__ import annotations

import ast
import itertools
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from latr_sglang.messages import short_repr

MAX_ANSWER_CHARS = 200  # a countdown equation over <= 6 numbers is far shorter
# Generation draws random expressions until one reaches an integer target in 1..max_target: the share that
# does falls with each number (1/8 at 3, 1/60 at 6, 1/2000 at 12), so 2000 problems of 6 numbers take ~5 s
# of CPU and 12 numbers ~6 min. Problems have at most this many numbers.
MAX_NUMBERS = 6
# draws per requested problem before generate() gives up (6 numbers in 1..100 need ~60 on average)
MAX_DRAWS_PER_PROBLEM = 1000
MAX_DEPTH = 32
CORRECT, WELL_FORMED, NO_ANSWER = 1.0, 0.1, 0.0
_ALLOWED_CHARS = set("0123456789+-*/() \t")

CHAT_TEMPLATE = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic "
    "operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> "
    "tags. And return the final answer in <answer> </answer> tags, for example "
    "<answer> (1 + 2) / 3 </answer>."
)
# The paper's prompt for base models (TinyZero's): the task inside a raw "User/Assistant" conversation.
RAW_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer.\nUser: " + CHAT_TEMPLATE + "\nAssistant: Let me solve this step by step.\n<think>"
)


@dataclass(frozen=True)
class CountdownProblem:
    numbers: tuple[int, ...]
    target: int
    solution: str  # one equation reaching the target (from the construction)

    def label(self) -> str:
        return json.dumps({"numbers": list(self.numbers), "target": self.target})

    def prompt(self, template: str = "raw") -> str:
        text = RAW_TEMPLATE if template == "raw" else CHAT_TEMPLATE
        return text.format(numbers=list(self.numbers), target=self.target)


# ---- generation ------------------------------------------------------------------------------------------
def _random_expression(rng: random.Random, numbers: list[int]) -> tuple[str, Fraction]:
    """A random fully parenthesized expression using every number once, and its exact value."""
    items: list[tuple[str, Fraction]] = [(str(n), Fraction(n)) for n in numbers]
    rng.shuffle(items)
    while len(items) > 1:
        i = rng.randrange(len(items) - 1)
        (ea, va), (eb, vb) = items[i], items[i + 1]
        op = rng.choice("+-*/")
        if op == "/" and vb == 0:
            op = "+"
        value = {"+": va + vb, "-": va - vb, "*": va * vb, "/": va / vb if vb else va}[op]
        items[i : i + 2] = [(f"({ea} {op} {eb})", value)]
    expr, value = items[0]
    return (expr[1:-1] if expr.startswith("(") and len(numbers) > 1 else expr), value


def generate(
    count: int,
    seed: int = 0,
    min_numbers: int = 3,
    max_numbers: int = 4,
    max_number: int = 100,
    max_target: int = 100,
    max_draws: int | None = None,
) -> list[CountdownProblem]:
    """Problems like the public Countdown-Tasks-3to4 set: 3-4 numbers in 1..100, an integer target in
    1..max_target reachable by construction. A ValueError when the settings cannot give `count` problems
    within `max_draws` random expressions (default MAX_DRAWS_PER_PROBLEM per problem)."""
    for name, value in (
        ("count", count),
        ("min_numbers", min_numbers),
        ("max_numbers", max_numbers),
        ("max_number", max_number),
        ("max_target", max_target),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name}={short_repr(value)}: must be an integer")
    if not 1 <= min_numbers <= max_numbers:
        raise ValueError(f"min_numbers={min_numbers}, max_numbers={max_numbers}: need 1 <= min <= max")
    if max_numbers > MAX_NUMBERS:
        raise ValueError(
            f"max_numbers={max_numbers}: countdown problems have 1..{MAX_NUMBERS} numbers (random "
            "expressions over more numbers rarely reach an integer target: generating them would take "
            "minutes to hours)"
        )
    if count < 0 or max_number < 1 or max_target < 1:
        raise ValueError(
            f"count={count}, max_number={max_number}, max_target={max_target}: need count >= 0 and "
            "max_number, max_target >= 1"
        )
    limit = max_draws if max_draws is not None else MAX_DRAWS_PER_PROBLEM * max(count, 10)
    rng = random.Random(seed)
    problems = []
    draws = 0
    while len(problems) < count:
        if draws >= limit:
            raise ValueError(
                f"countdown.generate: only {len(problems)} of {count} problems in {draws} random expressions "
                f"(min_numbers={min_numbers}, max_numbers={max_numbers}, max_number={max_number}, "
                f"max_target={max_target}): these settings rarely give an integer target in 1..{max_target}"
            )
        draws += 1
        numbers = [rng.randint(1, max_number) for _ in range(rng.randint(min_numbers, max_numbers))]
        expr, value = _random_expression(rng, numbers)
        if value.denominator == 1 and 1 <= value <= max_target:
            problems.append(CountdownProblem(tuple(numbers), int(value), expr))
    return problems


# ---- labels ------------------------------------------------------------------------------------------
_INTEGER_TEXT = re.compile(r"\s*[+-]?[0-9]{1,30}\s*")


def as_integer(value: object) -> int | None:
    """An int, or a form that can only mean one: an integral float (65.0) or the digits of one ("65"); None
    for anything else (3.7, true, "x": int() would truncate 3.7 to 3 and make a different problem). JSON
    datasets often store numbers as strings; comparing the string "65" with the value 65 would make every
    correct answer score as wrong."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return int(value)
    return None


def _label_integer(value: object, field: str) -> int:
    number = as_integer(value)
    if number is None:
        raise ValueError(f"label.{field}={short_repr(value)}: must be an integer")
    return number


def label_values(label: dict) -> tuple[list[int], int]:
    """(numbers, target) of a countdown label {"numbers": [...], "target": N}, with integer strings and
    integral floats converted; a ValueError naming the field for anything else."""
    if "numbers" not in label or "target" not in label:
        missing = " and ".join(k for k in ("numbers", "target") if k not in label)
        raise ValueError(f"countdown label {short_repr(label)}: no {missing}")
    numbers = label["numbers"]
    if not isinstance(numbers, list | tuple) or not numbers:
        raise ValueError(f"label.numbers={short_repr(numbers)}: must be a non-empty list of integers")
    values = [_label_integer(v, f"numbers[{i}]") for i, v in enumerate(numbers)]
    for i, value in enumerate(values):
        if value < 0:  # an equation writes -3 as minus 3: a negative number could never count as used
            raise ValueError(f"label.numbers[{i}]={value}: countdown numbers are integers >= 0")
    return values, _label_integer(label["target"], "target")


# ---- reward ----------------------------------------------------------------------------------------------
def extract_answer(response: str) -> str | None:
    """The text inside the last <answer>...</answer> (linear time: no regex backtracking on huge inputs)."""
    end = response.rfind("</answer>")
    if end < 0:
        return None
    start = response.rfind("<answer>", 0, end)
    if start < 0:
        return None
    return response[start + len("<answer>") : end]


class _Rejected(Exception):
    pass


def parse_equation(text: str) -> ast.expr:
    """The expression's AST, or _Rejected for anything but integers, + - * /, unary minus and parentheses."""
    text = text.strip()
    if "=" in text:  # "55 + 36 - 19 - 7 = 65": judge the left-hand side
        text = text.split("=", 1)[0].strip()
    if (
        not text
        or len(text) > MAX_ANSWER_CHARS
        or not set(text) <= _ALLOWED_CHARS
        or "**" in text
        or "//" in text
    ):
        raise _Rejected
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _Rejected from None
    _check(tree, 0)
    return tree


def _check(node: ast.AST, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Rejected
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Div):
        _check(node.left, depth + 1)
        _check(node.right, depth + 1)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        _check(node.operand, depth + 1)
    elif not (isinstance(node, ast.Constant) and type(node.value) is int):
        raise _Rejected


def literals(node: ast.expr) -> list[int]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]


def evaluate(node: ast.expr) -> Fraction:
    """Exact value; ZeroDivisionError on a division by zero."""
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp):
        return -evaluate(node.operand)
    left, right = evaluate(node.left), evaluate(node.right)
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    return left / right


def score(response: str, numbers: list[int] | tuple[int, ...], target: int) -> tuple[float, dict[str, float]]:
    """(shaped reward, info) for one response; never raises."""
    info = {"answered": 0.0, "well_formed": 0.0, "correct": 0.0}
    try:
        answer = extract_answer(response) if isinstance(response, str) else None
        if answer is None:
            return NO_ANSWER, info
        info["answered"] = 1.0
        tree = parse_equation(answer)
        info["well_formed"] = 1.0
        if Counter(literals(tree)) != Counter(numbers):
            return WELL_FORMED, info
        try:
            value = evaluate(tree)
        except ZeroDivisionError:
            return WELL_FORMED, info
        if value == target:
            info["correct"] = 1.0
            return CORRECT, info
        return WELL_FORMED, info
    except _Rejected:
        return NO_ANSWER, info
    except Exception:
        return NO_ANSWER, info


def solvable(numbers: list[int] | tuple[int, ...], target: int) -> bool:
    """Exhaustive check (<= 4 numbers: instant) that some equation using every number once hits target."""

    def values(nums: tuple[Fraction, ...]) -> set[Fraction]:
        if len(nums) == 1:
            return {nums[0]}
        out: set[Fraction] = set()
        for i, j in itertools.permutations(range(len(nums)), 2):
            rest = tuple(n for k, n in enumerate(nums) if k not in (i, j))
            a, b = nums[i], nums[j]
            for v in {a + b, a - b, a * b, *([a / b] if b else [])}:
                out |= values((*rest, v))
        return out

    return Fraction(target) in values(tuple(Fraction(n) for n in numbers))
