"""Math: final-answer extraction, normalization and equivalence, time-bounded against hostile outputs.

The answer is the last `Answer:` line (DAPO's instruction, used by the paper) or the last
`\\boxed{...}`, whichever comes last. Normalized strings that are equal, or plain numbers of equal exact
value, score 1 at once; otherwise math-verify decides symbolic equivalence in a worker process whose bound
is the CPU time of the verification itself (see verify_pool). math-verify is configured strictly: decimals
are exact (a 6-decimal approximation of pi is not pi) and an equation only states a value when it is
`symbol = value` (`5 = 3` is not 3). Anything malformed scores 0.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from fractions import Fraction

from latr_sglang.tasks.verify_pool import CPUBudget, TimeoutPool, WorkersCannotStart

logger = logging.getLogger(__name__)

MAX_RESPONSE_SCAN = 8_000  # answers sit at the end of a response; only its tail is scanned
MAX_ANSWER_CHARS = 400
# CPU seconds of one verification (waiting for a worker and a busy machine excluded). The costliest of 250
# MATH-500 answers verified against themselves took 0.12 s of CPU; hostile towers and factorials use it all.
VERIFY_TIMEOUT_S = 2.0
# CPU seconds of verification one reward batch may use in all: a batch of distinct hostile answers (each
# using its whole VERIFY_TIMEOUT_S) is bounded as a batch. The base lets two of them run out their bound; the
# per-answer part is twice the costliest MATH-500 answer, so a batch of honest answers never reaches it.
BATCH_VERIFY_BASE_S = 2 * VERIFY_TIMEOUT_S
BATCH_VERIFY_PER_ANSWER_S = 0.25
VERDICT_CACHE_SIZE = 4096  # a GRPO group often repeats one answer: each (gold, answer) pair is verified once

DAPO_TEMPLATE = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{problem}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)

_BRACE = re.compile(r"[{}]")
_ANSWER_LINE = re.compile(r"(?im)^[ \t*#]*answer\s*:[ \t]*([^\n]{0,400})")  # 400 = MAX_ANSWER_CHARS


def last_boxed(text: str) -> tuple[int, str] | None:
    """Position and content of the last \\boxed{...} whose braces balance. One pass pairs every brace (a
    stack), so many unclosed `\\boxed{` cost linear time: a scan from each of them to the end was quadratic,
    and this runs in the caller's process, outside the verifier's time bound."""
    closing: dict[int, int] = {}  # position of a "{" -> position of its matching "}"
    opened: list[int] = []
    for m in _BRACE.finditer(text):
        if m.group() == "{":
            opened.append(m.start())
        elif opened:  # a "}" with nothing open closes nothing
            closing[opened.pop()] = m.start()
    start = text.rfind("\\boxed")
    while start >= 0:
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{" and i in closing:
            return start, text[i + 1 : closing[i]]
        start = text.rfind("\\boxed", 0, start)
    return None


def extract_answer(response: str) -> str | None:
    if not isinstance(response, str):
        return None
    tail = response[-MAX_RESPONSE_SCAN:]
    candidates: list[tuple[int, str]] = []
    lines = list(_ANSWER_LINE.finditer(tail))
    if lines:
        candidates.append((lines[-1].start(), lines[-1].group(1)))
    boxed = last_boxed(tail)
    if boxed is not None:
        candidates.append(boxed)
    if not candidates:
        return None
    answer = max(candidates)[1].strip()
    if not answer or len(answer) > MAX_ANSWER_CHARS or "\x00" in answer:
        return None
    inner = last_boxed(answer)  # "Answer: $\\boxed{5}$"
    return inner[1].strip() if inner else answer


_REMOVE = [
    "\\left",
    "\\right",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "$",
    "\\displaystyle",
    "^\\circ",
    "^{\\circ}",
    "\\%",
    "%",
    "degrees",
    "units",
    "\\dfrac",
    "\\tfrac",
]


def normalize(answer: str) -> str:
    """A light canonical form: enough to match equal answers written differently without a CAS."""
    s = answer.strip().rstrip(".")
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:mathrm|textbf|mbox)\{\s*([^{}]*)\}", r"\1", s)
    for token in _REMOVE:
        s = s.replace(token, "\\frac" if token in ("\\dfrac", "\\tfrac") else "")
    s = s.replace(" ", "")
    s = re.sub(r"^[a-zA-Z]\s*=", "", s)  # "x = 5"
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)  # 1,000 -> 1000
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")
_PLAIN_FRACTION = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}|(-?\d+)/(-?\d+)")


def exact_number(normalized: str) -> Fraction | None:
    """The exact value of a plain number (`12`, `-0.5`, `\\frac{1}{2}`, `3/4`) in normalized form, else None.
    Decimals are exact: 3.141593 is 3141593/1000000, never pi."""
    if len(normalized) > 40:
        return None
    if _PLAIN_NUMBER.fullmatch(normalized):
        return Fraction(normalized)
    m = _PLAIN_FRACTION.fullmatch(normalized)
    if m is None:
        return None
    sign, num, den = (
        (m.group(1), m.group(2), m.group(3)) if m.group(2) is not None else ("", m.group(4), m.group(5))
    )
    if int(den) == 0:
        return None
    value = Fraction(int(num), int(den))
    return -value if sign else value


def _exact_decimals(expr):
    """Floats as the exact decimals they were written as: a 6-decimal approximation of pi is not pi."""
    from sympy import Float, Rational

    try:
        floats = expr.atoms(Float)
        return expr.xreplace({f: Rational(str(f)) for f in floats}) if floats else expr
    except Exception:
        return expr


def _is_relation(expr) -> bool:
    from sympy import And
    from sympy.core.relational import Relational

    return isinstance(expr, Relational | And)


def _as_answer(expr):
    """The value a prediction states, when the gold is a value: `x = 3` states 3; any other equation or chain
    (`5 = 3`, `x = 5 = 3`, `a + b = 3`) states no value (math-verify would compare its last side)."""
    from sympy import Eq, Symbol

    if isinstance(expr, str) or not _is_relation(expr):
        return expr
    if isinstance(expr, Eq) and isinstance(expr.lhs, Symbol) and not _is_relation(expr.rhs):
        return expr.rhs
    return None


def _math_verify_equal(gold: str, predicted: str) -> bool:
    """Runs inside a verify_pool worker, whose CPU-time bound replaces math-verify's wall-clock alarms (those
    fire on a busy machine and would fail a correct answer)."""
    from math_verify import grader, parse, parser, verify

    parser.TIMEOUT_WARNING_SHOWN = grader.TIMEOUT_WARNING_SHOWN = True  # the pool is the timeout
    g = [_exact_decimals(e) for e in parse("$" + gold + "$", parsing_timeout=None)]
    p = [_exact_decimals(e) for e in parse("$" + predicted + "$", parsing_timeout=None)]
    if not any(_is_relation(e) for e in g if not isinstance(e, str)):
        p = [a for a in (_as_answer(e) for e in p) if a is not None]
    # float_rounding=15: any Float left (one the exact conversion could not reach) compares at full precision
    return bool(g and p and verify(g, p, float_rounding=15, timeout_seconds=None))


def _pool_workers() -> tuple[int, int]:
    """(warm minimum, maximum): from LATR_VERIFY_WORKERS=N (or MIN:MAX), else 2 and enough for the callers a
    Ray engine actor or the local trainer runs at once on this machine."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    default = 2, max(4, min(16, 2 * cpus))
    spec = os.environ.get("LATR_VERIFY_WORKERS", "").strip()
    if not spec:
        return default
    try:
        low, _, high = spec.partition(":")
        lo, hi = int(low), int(high or low)
        if 1 <= lo <= hi:
            return lo, hi
    except ValueError:
        pass
    # a warning, not an error: this runs inside a reward call, which must not fail
    logger.warning(
        "LATR_VERIFY_WORKERS=%r: expected N or MIN:MAX with 1 <= MIN <= MAX; using %d:%d", spec, *default
    )
    return default


_pool: TimeoutPool | None = None
_pool_pid: int | None = None
_pool_lock = threading.Lock()


def verifier_pool() -> TimeoutPool:
    """The process-wide verifier pool; created (and warming) on first use."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():  # a forked child must not share its parent's pipes
            _pool_pid = os.getpid()
            low, high = _pool_workers()
            _pool = TimeoutPool(
                _math_verify_equal,
                workers=low,
                max_workers=high,
                timeout_s=VERIFY_TIMEOUT_S,
                warmup=("\\frac{1}{2}", "0.5"),
            )
        return _pool


_verdicts: OrderedDict[tuple[str, str], bool] = OrderedDict()
_verdicts_lock = threading.Lock()


def batch_budget(answers: int) -> CPUBudget:
    """The verification CPU budget of a reward batch of `answers` answers (see BATCH_VERIFY_BASE_S)."""
    return CPUBudget(BATCH_VERIFY_BASE_S + BATCH_VERIFY_PER_ANSWER_S * max(answers, 0))


def verified_equal(gold: str, predicted: str, budget: CPUBudget | None = None) -> bool:
    """math-verify's verdict, from the pool, cached. A verdict that the machine's load decided (the wall-clock
    cap), a spent batch `budget` or a pool failure is not cached: the same answer gets a fresh try next
    time."""
    key = (gold, predicted)
    with _verdicts_lock:
        if key in _verdicts:
            _verdicts.move_to_end(key)
            return _verdicts[key]
    outcome, value = verifier_pool().call_outcome(gold, predicted, budget=budget)
    verdict = bool(value) if outcome == "ok" else False
    if outcome in ("ok", "timeout", "error"):
        with _verdicts_lock:
            _verdicts[key] = verdict
            while len(_verdicts) > VERDICT_CACHE_SIZE:
                _verdicts.popitem(last=False)
    return verdict


def warm_up() -> None:
    """Start the verifier's workers now (they import math-verify in the background), not at the first
    answer."""
    verifier_pool()


def score(response: str, gold: str, budget: CPUBudget | None = None) -> tuple[float, dict[str, float]]:
    """(accuracy in {0, 1}, info); raises only WorkersCannotStart (no verifier worker can start at all:
    the setup, not the answer, is broken). The verification gets VERIFY_TIMEOUT_S of CPU time however
    busy the machine is; the call also waits for a free worker. With a `budget` (shared by a batch), an
    answer that needs math-verify once the budget is spent scores 0."""
    info = {"answered": 0.0, "correct": 0.0}
    try:
        predicted = extract_answer(response)
        if predicted is None or not isinstance(gold, str) or not gold.strip():
            return 0.0, info
        info["answered"] = 1.0
        norm_predicted, norm_gold = normalize(predicted), normalize(gold)
        if not norm_gold:  # "$" or "units": nothing left to compare, and "" would equal any such answer
            return 0.0, info
        if norm_predicted == norm_gold:
            info["correct"] = 1.0
            return 1.0, info
        exact_p, exact_g = exact_number(norm_predicted), exact_number(norm_gold)
        if exact_p is not None and exact_g is not None and exact_p == exact_g:  # 0.5 vs \frac{1}{2}, no CAS
            info["correct"] = 1.0
            return 1.0, info
        if verified_equal(gold, predicted, budget):
            info["correct"] = 1.0
            return 1.0, info
        return 0.0, info
    except WorkersCannotStart:  # the setup, not the answer: every answer would score 0 without a word
        raise
    except Exception:
        return 0.0, info
