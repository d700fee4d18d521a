"""Math: final-answer extraction, normalization and equivalence, time-bounded against hostile outputs.

The answer is the last `Answer:` line (DAPO's instruction, used by the paper) or the last
`\\boxed{...}`, whichever comes last. Normalized strings that are equal score 1 at once; otherwise
math-verify decides symbolic equivalence in a worker process with a hard time bound (see verify_pool).
Anything malformed scores 0.
"""

from __future__ import annotations

import re
import threading

from latr_sglang.tasks.verify_pool import TimeoutPool

MAX_RESPONSE_SCAN = 8_000  # answers sit at the end of a response; only its tail is scanned
MAX_ANSWER_CHARS = 400
VERIFY_TIMEOUT_S = 3.0

DAPO_TEMPLATE = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{problem}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)

_ANSWER_LINE = re.compile(r"(?im)^[ \t*#]*answer\s*:[ \t]*([^\n]{0,400})")  # 400 = MAX_ANSWER_CHARS


def last_boxed(text: str) -> tuple[int, str] | None:
    """Position and content of the last \\boxed{...} (braces balanced; linear scan)."""
    start = text.rfind("\\boxed")
    while start >= 0:
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return start, text[i + 1 : j]
                j += 1
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


def _math_verify_equal(gold: str, predicted: str) -> bool:
    """Runs inside a worker process."""
    from math_verify import parse, verify

    # This is a worker process's main thread, where math-verify's signal-based timeouts work: they end most
    # slow cases cleanly; the pool's kill is the hard bound for the rest.
    g = parse("$" + gold + "$", parsing_timeout=2)
    p = parse("$" + predicted + "$", parsing_timeout=2)
    return bool(g and p and verify(g, p, timeout_seconds=2))


_pool: TimeoutPool | None = None
_pool_lock = threading.Lock()


def verifier_pool() -> TimeoutPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = TimeoutPool(_math_verify_equal, workers=2, timeout_s=VERIFY_TIMEOUT_S)
        return _pool


def score(response: str, gold: str) -> tuple[float, dict[str, float]]:
    """(accuracy in {0, 1}, info); never raises, returns within about VERIFY_TIMEOUT_S."""
    info = {"answered": 0.0, "correct": 0.0}
    try:
        predicted = extract_answer(response)
        if predicted is None or not isinstance(gold, str) or not gold.strip():
            return 0.0, info
        info["answered"] = 1.0
        if normalize(predicted) == normalize(gold):
            info["correct"] = 1.0
            return 1.0, info
        if verifier_pool().call(gold, predicted, default=False):
            info["correct"] = 1.0
            return 1.0, info
        return 0.0, info
    except Exception:
        return 0.0, info
