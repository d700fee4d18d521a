"""SGLang's native /generate wire format, both directions, shared by our server and our SGLang clients.

Requests follow ``sglang.srt.managers.io_struct.GenerateReqInput`` (input_ids or text, sampling_params,
return_logprob, top_logprobs_num, logprob_start_len); responses follow SGLang's tokenizer manager: ``text``,
``output_ids`` and ``meta_info`` with ``finish_reason`` ({"type": "stop"|"length"|"abort", "matched": ...}),
``prompt_tokens``, ``completion_tokens``, ``cached_tokens`` and the log-prob lists as [logprob, token_id,
text].
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator
from dataclasses import fields
from typing import Any

from latr_sglang.engines.base import (
    FinishReason,
    GenerateOutput,
    GenerateRequest,
    RequestError,
    SamplingParams,
)

# SGLang sampling keys we implement.
_SUPPORTED = {f.name for f in fields(SamplingParams)}
# SGLang sampling keys accepted only at their neutral value (what SGLang's own frontend sends by default).
_NEUTRAL = {
    "n": 1,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "repetition_penalty": 1.0,
    "json_schema": None,
    "regex": None,
    "ebnf": None,
    "structural_tag": None,
    "stop_regex": None,
    "logit_bias": None,
    "custom_params": None,
    "beam_width": None,
    "watermark": None,
}
# JSON types of the keys we implement: a bool is not an int here, and a float must be finite (1e400 is inf).
_INT_KEYS = {"max_new_tokens", "top_k", "min_new_tokens", "sampling_seed"}
_FLOAT_KEYS = {"temperature", "top_p", "min_p"}
_BOOL_KEYS = {"ignore_eos"}
# Below this a temperature is greedy, as in SGLang (its _SAMPLING_EPS): logits / 1e-300 overflow to inf, and
# the softmax of that is NaN, so such a "sample" would be garbage.
GREEDY_TEMPERATURE_EPS = 1e-6
_SEED_RANGE = (0, 2**63 - 1)
_MAX_STOPS, _MAX_STOP_LEN = 64, 512  # what torch.Generator.manual_seed accepts without wrapping


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """`value` as a JSON integer field; RequestError naming `name` otherwise (bools, floats, inf refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name}={value!r}: must be an integer")
    if lo is not None and value < lo:
        raise RequestError(f"{name}={value!r}: must be >= {lo}" + (f" and <= {hi}" if hi is not None else ""))
    if hi is not None and value > hi:
        raise RequestError(f"{name}={value!r}: must be <= {hi}")
    return value


def check_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError(f"{name}={value!r}: must be a finite number")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise RequestError(f"{name}={value!r}: must be true or false")
    return value


# SGLang sampling keys that only shape the text (decoding), not generation.
_TEXT_ONLY = {
    "skip_special_tokens": True,
    "spaces_between_special_tokens": True,
    "no_stop_trim": False,
    "stream_interval": None,
}


def sampling_params_to_sglang(sp: SamplingParams) -> dict[str, Any]:
    out: dict[str, Any] = {
        "max_new_tokens": sp.max_new_tokens,
        "temperature": sp.temperature,
        "top_p": sp.top_p,
        "top_k": sp.top_k,
        "min_p": sp.min_p,
        "ignore_eos": sp.ignore_eos,
        "min_new_tokens": sp.min_new_tokens,
    }
    if sp.sampling_seed is not None:
        out["sampling_seed"] = sp.sampling_seed
    if sp.stop_token_ids:
        out["stop_token_ids"] = list(sp.stop_token_ids)
    if sp.stop:
        out["stop"] = list(sp.stop)
    return out


def sampling_params_from_sglang(raw: Any) -> tuple[SamplingParams, dict[str, Any]]:
    """Parses SGLang sampling params; returns them and the text-only options. Raises RequestError."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RequestError(f"sampling_params must be an object, got {type(raw).__name__}")
    kwargs: dict[str, Any] = {}
    text_opts = dict(_TEXT_ONLY)
    for key, value in raw.items():
        if key in _SUPPORTED:
            if value is None:
                continue  # SGLang's frontend sends explicit nulls for unset options
            if key == "stop":
                value = (value,) if isinstance(value, str) else value
                if not isinstance(value, list | tuple):
                    raise RequestError(
                        f"sampling_params.stop={value!r}: must be a string or a list of strings"
                    )
                value = tuple(value)
                # each stop string is searched in the decoded tail at every step
                if len(value) > _MAX_STOPS or any(
                    isinstance(s, str) and len(s) > _MAX_STOP_LEN for s in value
                ):
                    raise RequestError(
                        f"sampling_params.stop: at most {_MAX_STOPS} strings of at most {_MAX_STOP_LEN} "
                        "characters"
                    )
            elif key == "stop_token_ids":
                if not isinstance(value, list | tuple | set):
                    raise RequestError(
                        f"sampling_params.stop_token_ids={value!r}: must be a list of token ids"
                    )
                value = tuple(check_int("sampling_params.stop_token_ids[]", t, 0) for t in value)
            elif key in _INT_KEYS:
                value = check_int(f"sampling_params.{key}", value)
                if key == "sampling_seed":
                    value = check_int("sampling_params.sampling_seed", value, *_SEED_RANGE)
            elif key in _FLOAT_KEYS:
                value = check_float(f"sampling_params.{key}", value)
            elif key in _BOOL_KEYS:
                value = check_bool(f"sampling_params.{key}", value)
            kwargs[key] = value
        elif key in _NEUTRAL:
            if value not in (None, [], "", {}) and value != _NEUTRAL[key]:
                raise RequestError(
                    f"sampling_params.{key}={value!r} is not supported by this engine "
                    f"(only the default {_NEUTRAL[key]!r})"
                )
        elif key in _TEXT_ONLY:
            if value is not None:
                if key == "stream_interval":
                    check_int("sampling_params.stream_interval", value, 1)
                else:
                    check_bool(f"sampling_params.{key}", value)
                text_opts[key] = value
        else:
            raise RequestError(f"sampling_params has an unknown key {key!r}")
    if 0.0 < kwargs.get("temperature", 1.0) < GREEDY_TEMPERATURE_EPS:
        kwargs["temperature"] = 0.0
    sp = SamplingParams(**kwargs)
    sp.validate()
    return sp, text_opts


def request_to_sglang(req: GenerateRequest) -> dict[str, Any]:
    """One request as a GenerateReqInput payload (single form)."""
    payload: dict[str, Any] = {
        "input_ids": list(req.input_ids),
        "sampling_params": sampling_params_to_sglang(req.sampling),
        "return_logprob": True,
        "logprob_start_len": req.logprob_start_len,
        "top_logprobs_num": req.top_logprobs_num,
    }
    if req.rid is not None:
        payload["rid"] = req.rid
    return payload


def _finish_reason_from_sglang(raw: Any) -> tuple[FinishReason, int | str | None]:
    if raw is None:
        return FinishReason.ABORT, None
    kind = raw.get("type") if isinstance(raw, dict) else raw
    matched = raw.get("matched") if isinstance(raw, dict) else None
    try:
        return FinishReason(kind), matched
    except ValueError:
        return FinishReason.ABORT, matched


def output_from_sglang(resp: dict[str, Any]) -> GenerateOutput:
    """Parses one SGLang /generate response object (requested with return_logprob=True)."""
    meta = resp.get("meta_info", {})
    reason, matched = _finish_reason_from_sglang(meta.get("finish_reason"))
    token_lps = meta.get("output_token_logprobs") or []
    output_ids = list(resp.get("output_ids") or [entry[1] for entry in token_lps])
    tops = meta.get("output_top_logprobs") or []
    input_lps = meta.get("input_token_logprobs") or []
    input_tops = meta.get("input_top_logprobs") or []
    error = None
    if reason == FinishReason.ABORT and isinstance(meta.get("finish_reason"), dict):
        error = meta["finish_reason"].get("message")
    return GenerateOutput(
        output_ids=output_ids,
        logprobs=[float(entry[0]) for entry in token_lps],
        top_logprobs=[[(int(e[1]), float(e[0])) for e in (pos or [])] for pos in tops],
        finish_reason=reason,
        prompt_tokens=int(meta.get("prompt_tokens", 0)),
        cached_tokens=int(meta.get("cached_tokens", 0)),
        matched_stop=matched,
        input_logprobs=[(int(e[1]), None if e[0] is None else float(e[0])) for e in input_lps],
        input_top_logprobs=[
            None if pos is None else [(int(e[1]), float(e[0])) for e in pos] for pos in input_tops
        ],
        error=error,
    )


# ---- streamed requests (stream: true): SGLang's events as parts ----------------------------------------
class StreamError(RuntimeError):
    """A stream of SGLang events that breaks the protocol: the server's fault, not the request's."""


def stream_interval(part_ends: list[int], max_new_tokens: int) -> int:
    """The request's sampling_params.stream_interval for sorted `part_ends`: SGLang's scheduler sends an event
    at the first token and then every that many, so their smallest spacing hands each end over at the first
    event at or after it (a single end: that end; none: only the first and the final event)."""
    gaps = [b - a for a, b in itertools.pairwise(part_ends)]
    return min(gaps, default=part_ends[0] if part_ends else max(max_new_tokens, 1))


def output_from_sglang_event(event: Any, sent: int, incremental: bool) -> GenerateOutput:
    """The new tokens of one stream event of a request (`sent` tokens before it): all of the event's output
    ids and output log-probs with --incremental-streaming-output, else those from `sent` on. finish_reason
    None: the request goes on."""
    if not isinstance(event, dict) or not isinstance(event.get("meta_info"), dict):
        raise StreamError(f"a stream event has no meta_info: {str(event)[:200]}")
    meta = dict(event["meta_info"])
    start = 0 if incremental else sent
    ids = event.get("output_ids") or []
    if len(ids) < start:
        raise StreamError(
            f"a stream event has {len(ids)} output ids after {sent} were streamed: does the server stream "
            "increments (--incremental-streaming-output) without saying so?"
        )
    for key in ("output_token_logprobs", "output_top_logprobs"):
        meta[key] = (meta.get(key) or [])[start:]
    out = output_from_sglang({"output_ids": ids[start:], "meta_info": meta})
    if len(out.logprobs) != len(out.output_ids):
        raise StreamError(
            f"a stream event has {len(out.output_ids)} new ids but {len(out.logprobs)} log-probs"
        )
    if event["meta_info"].get("finish_reason") is None:
        out.finish_reason = None
    return out


async def parts_from_sglang_stream(
    events: AsyncIterator[Any], incremental: bool
) -> AsyncIterator[GenerateOutput]:
    """One streamed request's parts from its SGLang events: each event with new tokens is a part, and the
    final event's output comes last, once `events` has ended (over HTTP, after [DONE]: the connection is
    free again). Closing this closes `events`. StreamError if an event follows the final one or the events
    end without it."""
    final: GenerateOutput | None = None
    sent = 0
    try:
        async for event in events:
            if final is not None:
                raise StreamError("the stream went on after the final output")
            out = output_from_sglang_event(event, sent, incremental)
            sent += len(out.output_ids)
            if out.finish_reason is not None:
                final = out
            elif out.output_ids:
                yield out
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    if final is None:
        raise StreamError("the stream ended without the request's final output")
    yield final


def output_to_sglang(
    out: GenerateOutput,
    tokenizer: Any,
    *,
    rid: str,
    return_logprob: bool,
    return_text_in_logprobs: bool = False,
    text_opts: dict[str, Any] | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    """One engine output as SGLang's /generate response object (finish_reason None: a stream event of an
    output so far, whose `text` the caller may give)."""
    text_opts = text_opts or _TEXT_ONLY
    no_trim = text_opts.get("no_stop_trim", False)
    ids = out.output_ids
    if isinstance(out.matched_stop, int) and ids and ids[-1] == out.matched_stop and not no_trim:
        ids = ids[:-1]  # SGLang trims the matched stop token from the text
    if text is None and tokenizer is None:
        text = ""
    elif text is None:
        text = tokenizer.decode(ids, skip_special_tokens=bool(text_opts.get("skip_special_tokens", True)))
        if isinstance(out.matched_stop, str) and not no_trim and out.matched_stop in text:
            text = text[: text.index(out.matched_stop)]

    def token_text(token_id: int) -> str | None:
        return tokenizer.decode([token_id]) if return_text_in_logprobs and tokenizer is not None else None

    if out.finish_reason is None:
        finish: dict[str, Any] | None = None
    elif out.finish_reason == FinishReason.ABORT:
        finish = {"type": "abort", "message": out.error or "aborted"}
    elif out.finish_reason == FinishReason.LENGTH:
        finish = {"type": "length", "length": len(out.output_ids)}
    else:
        finish = {"type": "stop", "matched": out.matched_stop}
    meta: dict[str, Any] = {
        "id": rid,
        "finish_reason": finish,
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
        "cached_tokens": out.cached_tokens,
    }
    if return_logprob:
        meta["output_token_logprobs"] = [
            [lp, t, token_text(t)] for t, lp in zip(out.output_ids, out.logprobs)
        ]
        meta["output_top_logprobs"] = [
            [[lp, t, token_text(t)] for t, lp in pos] or None for pos in out.top_logprobs
        ]
        meta["input_token_logprobs"] = [[lp, t, token_text(t)] for t, lp in out.input_logprobs]
        meta["input_top_logprobs"] = [
            None if pos is None else [[lp, t, token_text(t)] for t, lp in pos]
            for pos in out.input_top_logprobs
        ]
    return {"text": text, "output_ids": list(out.output_ids), "meta_info": meta}


# ---- /update_weights_from_tensor ------------------------------------------------------------------------
# SGLang's HTTP form carries MultiprocessingSerializer bytes (pickle) in base64. Unpickling what a network
# client sends would run its code, so this server takes safetensors bytes instead, in the same field.
TENSOR_LOAD_FORMATS = (None, "safetensors")


def encode_named_tensors(named_tensors: Any) -> str:
    """Named tensors (a dict or (name, tensor) pairs) as one entry of `serialized_named_tensors`."""
    import base64

    from safetensors.torch import save

    items = dict(named_tensors.items() if hasattr(named_tensors, "items") else named_tensors)
    return base64.b64encode(save({k: v.detach().cpu().contiguous() for k, v in items.items()})).decode()


def decode_named_tensors(entry: Any, index: int = 0) -> dict[str, Any]:
    """One `serialized_named_tensors` entry back to tensors. Raises RequestError naming what is wrong."""
    import base64
    import binascii

    from safetensors.torch import load

    field = f"serialized_named_tensors[{index}]"
    if not isinstance(entry, str):
        raise RequestError(f"{field}: must be a base64 string of safetensors bytes")
    try:
        raw = base64.b64decode(entry, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"{field}: not valid base64 ({e})") from None
    try:
        return load(raw)
    except Exception as e:  # safetensors raises its own SafetensorError for any malformed header or data
        raise RequestError(f"{field}: not a valid safetensors payload ({e})") from None
