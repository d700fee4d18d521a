"""SGLang's native /generate wire format, both directions, shared by our server and our SGLang clients.

Requests follow ``sglang.srt.managers.io_struct.GenerateReqInput`` (input_ids or text, sampling_params,
return_logprob, top_logprobs_num, logprob_start_len); responses follow SGLang's tokenizer manager: ``text``,
``output_ids`` and ``meta_info`` with ``finish_reason`` ({"type": "stop"|"length"|"abort", "matched": ...}),
``prompt_tokens``, ``completion_tokens``, ``cached_tokens`` and the log-prob lists as [logprob, token_id,
text].
"""

from __future__ import annotations

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
            elif key == "stop_token_ids":
                if not isinstance(value, list | tuple | set):
                    raise RequestError(
                        f"sampling_params.stop_token_ids={value!r}: must be a list of token ids"
                    )
                value = tuple(value)
            kwargs[key] = value
        elif key in _NEUTRAL:
            if value not in (None, [], "", {}) and value != _NEUTRAL[key]:
                raise RequestError(
                    f"sampling_params.{key}={value!r} is not supported by this engine "
                    f"(only the default {_NEUTRAL[key]!r})"
                )
        elif key in _TEXT_ONLY:
            if value is not None:
                text_opts[key] = value
        else:
            raise RequestError(f"sampling_params has an unknown key {key!r}")
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


def output_to_sglang(
    out: GenerateOutput,
    tokenizer: Any,
    *,
    rid: str,
    return_logprob: bool,
    return_text_in_logprobs: bool = False,
    text_opts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One engine output as SGLang's /generate response object."""
    text_opts = text_opts or _TEXT_ONLY
    no_trim = text_opts.get("no_stop_trim", False)
    ids = out.output_ids
    if isinstance(out.matched_stop, int) and ids and ids[-1] == out.matched_stop and not no_trim:
        ids = ids[:-1]  # SGLang trims the matched stop token from the text
    text = ""
    if tokenizer is not None:
        text = tokenizer.decode(ids, skip_special_tokens=bool(text_opts.get("skip_special_tokens", True)))
        if isinstance(out.matched_stop, str) and not no_trim and out.matched_stop in text:
            text = text[: text.index(out.matched_stop)]

    def token_text(token_id: int) -> str | None:
        return tokenizer.decode([token_id]) if return_text_in_logprobs and tokenizer is not None else None

    if out.finish_reason == FinishReason.ABORT:
        finish: dict[str, Any] | None = {"type": "abort", "message": out.error or "aborted"}
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
