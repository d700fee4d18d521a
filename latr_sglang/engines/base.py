"""The engine contract: what the LATR driver asks of any generation backend.

One request is one sequence (no ``n``): the driver owns fan-out, so that every branch of a tree is an explicit
request whose input ids extend an earlier request's prompt + output (the engine's prefix cache serves it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

# the most top log-probs a request may ask for per position (the tree phase asks for max_branch_per_token)
MAX_TOP_LOGPROBS = 100


class RequestError(ValueError):
    """A request the engine refuses; the message names the offending field and value."""


class FinishReason(StrEnum):
    STOP = "stop"  # EOS, a stop token id or a stop string
    LENGTH = "length"  # max_new_tokens or the model's context length
    ABORT = "abort"  # cancelled or failed


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling, a subset of SGLang's ``SamplingParams`` with the same names and defaults."""

    max_new_tokens: int = 128
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = -1  # -1: whole vocabulary
    min_p: float = 0.0
    sampling_seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()  # stop strings, matched on the decoded output
    ignore_eos: bool = False
    min_new_tokens: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    def validate(self, max_new_tokens_limit: int | None = None) -> None:
        def bad(name: str, value: Any, why: str) -> RequestError:
            return RequestError(f"sampling_params.{name}={value!r}: {why}")

        if not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool):
            raise bad("max_new_tokens", self.max_new_tokens, "must be an integer")
        if self.max_new_tokens < 0:
            raise bad("max_new_tokens", self.max_new_tokens, "must be >= 0")
        if max_new_tokens_limit is not None and self.max_new_tokens > max_new_tokens_limit:
            raise bad("max_new_tokens", self.max_new_tokens, f"exceeds the limit {max_new_tokens_limit}")
        for name in ("temperature", "top_p", "min_p"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise bad(name, value, "must be a finite number")
        if self.temperature < 0:
            raise bad("temperature", self.temperature, "must be >= 0 (0 = greedy)")
        if not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", self.top_p, "must be in (0, 1]")
        if not 0.0 <= self.min_p <= 1.0:
            raise bad("min_p", self.min_p, "must be in [0, 1]")
        if not isinstance(self.top_k, int) or self.top_k == 0 or self.top_k < -1:
            raise bad("top_k", self.top_k, "must be -1 (all) or a positive integer")
        if self.sampling_seed is not None and not isinstance(self.sampling_seed, int):
            raise bad("sampling_seed", self.sampling_seed, "must be an integer")
        if not isinstance(self.min_new_tokens, int) or self.min_new_tokens < 0:
            raise bad("min_new_tokens", self.min_new_tokens, "must be an integer >= 0")
        if self.min_new_tokens > self.max_new_tokens:
            raise bad(
                "min_new_tokens", self.min_new_tokens, f"must be <= max_new_tokens ({self.max_new_tokens})"
            )
        for t in self.stop_token_ids:
            if not isinstance(t, int) or isinstance(t, bool) or t < 0:
                raise bad("stop_token_ids", list(self.stop_token_ids), "must be non-negative integers")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise bad("stop", list(self.stop), "must be non-empty strings")


@dataclass(frozen=True)
class GenerateRequest:
    input_ids: tuple[int, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # How many raw (pre-temperature) top log-probs to return at every output position; 0 = none.
    top_logprobs_num: int = 0
    # Input log-probs from this position on (SGLang's logprob_start_len); -1 = none. Asking for them forces
    # the
    # engine to recompute the prompt, so continuation requests must leave it at -1.
    logprob_start_len: int = -1
    rid: str | None = None
    # One key per group (a prompt's tree and samples): SGLang's routing_key, so a router keeps them on one
    # worker, whose radix cache holds their shared prefix. Engines without routing ignore it.
    routing_key: str | None = None

    def validate(self, vocab_size: int, context_length: int) -> None:
        ids = self.input_ids
        if len(ids) == 0:
            raise RequestError("input_ids is empty: a request needs at least one token")
        # fast path (a request per tree chunk adds up): all plain ints within range; else find the bad one
        if set(map(type, ids)) != {int} or min(ids) < 0 or max(ids) >= vocab_size:
            for t in ids:
                if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab_size:
                    raise RequestError(f"input_ids contains {t!r}, outside the vocabulary [0, {vocab_size})")
        if len(ids) >= context_length:
            raise RequestError(
                f"input_ids has {len(ids)} tokens, the model's context length is {context_length}: "
                "no room to generate"
            )
        self.sampling.validate(max_new_tokens_limit=context_length)
        for t in self.sampling.stop_token_ids:
            if t >= vocab_size:
                raise RequestError(f"sampling_params.stop_token_ids contains {t}, outside the vocabulary")
        if not isinstance(self.top_logprobs_num, int) or not 0 <= self.top_logprobs_num <= MAX_TOP_LOGPROBS:
            raise RequestError(
                f"top_logprobs_num={self.top_logprobs_num!r}: must be an integer in [0, {MAX_TOP_LOGPROBS}]"
            )
        if not isinstance(self.logprob_start_len, int) or self.logprob_start_len < -1:
            raise RequestError(f"logprob_start_len={self.logprob_start_len!r}: must be -1 or >= 0")
        if self.logprob_start_len >= len(ids):
            raise RequestError(
                f"logprob_start_len={self.logprob_start_len} must be < the input length {len(ids)}"
            )


@dataclass
class GenerateOutput:
    output_ids: list[int]
    # log-prob of each output token under the sampling distribution (logits / temperature; greedy: raw)
    logprobs: list[float]
    # per output position, the top-k of the raw (pre-temperature) distribution: [(token_id, logprob), ...]
    top_logprobs: list[list[tuple[int, float]]]
    finish_reason: FinishReason | None  # None: a part of an output handed over in parts, more follows
    prompt_tokens: int
    cached_tokens: int  # input tokens whose KV came from the prefix cache
    matched_stop: int | str | None = None  # the stop token id or stop string that ended the request
    # input log-probs from logprob_start_len on: (token_id, logprob or None for the first position)
    input_logprobs: list[tuple[int, float | None]] = field(default_factory=list)
    input_top_logprobs: list[list[tuple[int, float]] | None] = field(default_factory=list)
    error: str | None = None

    @property
    def completion_tokens(self) -> int:
        return len(self.output_ids)


@runtime_checkable
class Engine(Protocol):
    """Async, batched generation. Implementations: TorchEngine, SGLangHTTPEngine, SGLangInProcessEngine.

    An engine may also offer `generate_in_parts(request, part_ends) -> AsyncIterator[GenerateOutput]`: one
    request's output handed over while it decodes, a part (finish_reason None, only its new tokens) when the
    output reaches one of `part_ends` tokens (TorchEngine: exactly there; over SGLang's stream: at the first
    event at or after it), then the rest; closing the iterator cancels the request. `join_parts` gives the
    whole output back. The LATR driver uses it where the engine's class defines it (all three;
    `hands_over_parts`) to replay, fork and prune before a request ends. A wrapper that forwards attributes
    to an engine must define it too to opt in: the driver does not take it from the wrapped engine, where it
    would bypass the wrapper.
    """

    async def generate(self, requests: list[GenerateRequest]) -> list[GenerateOutput]: ...

    async def update_weights(self, named_tensors: Any) -> None: ...

    async def flush_cache(self) -> None: ...

    async def close(self) -> None: ...


def hands_over_parts(engine: Any) -> bool:
    """Whether the engine's class defines `generate_in_parts` (see `Engine`)."""
    return callable(getattr(type(engine), "generate_in_parts", None))


def check_part_ends(part_ends: Iterable[int]) -> list[int]:
    """`part_ends` of `generate_in_parts`, sorted; RequestError naming a bad one."""
    ends = list(part_ends)
    for end in ends:
        if not isinstance(end, int) or isinstance(end, bool) or end < 1:
            raise RequestError(f"part_ends contains {end!r}: output lengths are integers >= 1")
    return sorted(set(ends))


def join_parts(parts: Sequence[GenerateOutput]) -> GenerateOutput:
    """One output from a request's parts, in order (the last carries the finish reason and other fields)."""
    if not parts:
        raise ValueError("join_parts needs at least one part")
    return dataclasses.replace(
        parts[-1],
        output_ids=[t for p in parts for t in p.output_ids],
        logprobs=[lp for p in parts for lp in p.logprobs],
        top_logprobs=[top for p in parts for top in p.top_logprobs],
    )
