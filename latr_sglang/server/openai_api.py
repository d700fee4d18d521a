"""OpenAI-compatible routes, as SGLang serves them: /v1/models, /v1/completions, /v1/chat/completions
(non-streaming, and streaming as server-sent events ending in `data: [DONE]`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from jinja2 import TemplateError

from latr_sglang.engines.base import FinishReason, GenerateOutput, GenerateRequest, RequestError
from latr_sglang.engines.wire import check_bool, check_float, check_int, sampling_params_from_sglang
from latr_sglang.server.core import HTTPError, ServerState, read_json, state_of
from latr_sglang.server.generation import (
    MAX_BATCH,
    SSE_DONE,
    StreamRun,
    TextStream,
    check_text_length,
    check_unicode,
    run_requests,
    sse,
    sse_response,
    stream_requests,
)

router = APIRouter()

# Fields of OpenAI's (and SGLang's extended) requests this server reads; others must be null/empty.
_COMMON = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "top_k",
    "min_p",
    "min_tokens",
    "ignore_eos",
    "stop_token_ids",
    "skip_special_tokens",
    "user",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "logit_bias",
    "no_stop_trim",
}
_COMPLETION = _COMMON | {"prompt", "logprobs", "echo", "best_of", "suffix"}
_CHAT = _COMMON | {
    "messages",
    "logprobs",
    "top_logprobs",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "response_format",
    "parallel_tool_calls",
    "chat_template_kwargs",
}
_ROLES = {"system", "user", "assistant", "developer"}


@router.get("/v1/models")
async def list_models(request: Request):
    state = state_of(request)
    return {"object": "list", "data": [_model_card(state)]}


@router.get("/v1/models/{model:path}")
async def get_model(request: Request, model: str):
    state = state_of(request)
    if model != state.model_name:
        raise HTTPError(
            404, f"model {model!r} is not served here (this server serves {state.model_name!r})", "model"
        )
    return _model_card(state)


def _model_card(state: ServerState) -> dict[str, Any]:
    return {
        "id": state.model_name,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "sglang",
        "root": state.model_name,
        "parent": None,
        "max_model_len": state.engine.context_length,
    }


def _object(body: Any, known: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for key, value in body.items():
        if key not in known and value not in (None, False, [], {}, ""):
            raise RequestError(f"{key}={value!r}: this field is not supported by this server")
    return body


def _sampling(body: dict[str, Any], default_max: int | None, max_key: str = "max_tokens") -> dict[str, Any]:
    """OpenAI sampling fields (checked under their OpenAI names) as SGLang sampling params."""
    out: dict[str, Any] = {}
    key = max_key if body.get(max_key) is not None else "max_tokens"
    if body.get(key) is not None:
        out["max_new_tokens"] = check_int(key, body[key], 0)
    elif default_max is not None:
        out["max_new_tokens"] = default_max
    for key, target in (("temperature", "temperature"), ("top_p", "top_p"), ("min_p", "min_p")):
        if body.get(key) is not None:
            out[target] = check_float(key, body[key])
    for key, target in (("top_k", "top_k"), ("min_tokens", "min_new_tokens")):
        if body.get(key) is not None:
            out[target] = check_int(key, body[key])
    for key, neutral in (("frequency_penalty", 0.0), ("presence_penalty", 0.0), ("repetition_penalty", 1.0)):
        if body.get(key) is not None and check_float(key, body[key]) != neutral:
            raise RequestError(f"{key}={body[key]!r} is not supported by this engine (only {neutral})")
    if body.get("logit_bias"):
        raise RequestError("logit_bias is not supported by this engine")
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 16:
            raise RequestError(f"stop={stop!r}: a non-empty string or a list of at most 16 of them")
        out["stop"] = stops
    if body.get("stop_token_ids") is not None:
        out["stop_token_ids"] = body["stop_token_ids"]
    for key in ("ignore_eos", "skip_special_tokens", "no_stop_trim"):
        if body.get(key) is not None:
            out[key] = check_bool(key, body[key])
    return out


def _n_and_seed(state: ServerState, body: dict[str, Any]) -> tuple[int, int | None]:
    n = check_int("n", body.get("n") if body.get("n") is not None else 1, 1, state.config.max_n)
    seed = body.get("seed")
    if seed is not None:
        seed = check_int("seed", seed, 0, 2**63 - 1 - state.config.max_n)
    return n, seed


def _requests(
    state: ServerState,
    prompts: list[list[int]],
    sampling: dict[str, Any],
    n: int,
    seed: int | None,
    top_logprobs: int,
) -> tuple[list[GenerateRequest], dict[str, Any]]:
    """n requests per prompt, choice i seeded seed + i (identical choices otherwise)."""
    if len(prompts) * n > MAX_BATCH:
        raise RequestError(f"{len(prompts)} prompts x n={n}: at most {MAX_BATCH} choices per call")
    requests = []
    text_opts: dict[str, Any] = {}
    for ids in prompts:
        for i in range(n):
            raw = dict(sampling)
            if seed is not None:
                raw["sampling_seed"] = seed + i
            if "max_new_tokens" not in raw:  # chat without max_tokens: up to the context length
                raw["max_new_tokens"] = max(state.engine.context_length - len(ids), 0)
            sp, text_opts = sampling_params_from_sglang(raw)
            req = GenerateRequest(tuple(ids), sp, top_logprobs_num=top_logprobs)
            state.engine.validate(req)
            requests.append(req)
    return requests, text_opts


def _finish(out: GenerateOutput) -> str:
    return {FinishReason.STOP: "stop", FinishReason.LENGTH: "length"}.get(out.finish_reason, "abort")


def _final_text(state: ServerState, out: GenerateOutput, text_opts: dict[str, Any]) -> str:
    from latr_sglang.engines.wire import output_to_sglang

    return output_to_sglang(out, state.engine.tokenizer, rid="", return_logprob=False, text_opts=text_opts)[
        "text"
    ]


def _usage(outputs: list[GenerateOutput], n: int) -> dict[str, int]:
    prompt = sum(o.prompt_tokens for o in outputs) // n  # each prompt is the input of n choices
    completion = sum(o.completion_tokens for o in outputs)
    cached = sum(o.cached_tokens for o in outputs)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _token_str(tokenizer: Any, token: int) -> str:
    return tokenizer.decode([token]) if tokenizer is not None else str(token)


def _stream_options(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict):
        raise RequestError(f"stream_options={opts!r}: must be an object")
    return check_bool("stream_options.include_usage", opts.get("include_usage", False))


async def _choice_stream(
    state: ServerState,
    run: StreamRun,
    requests: list[GenerateRequest],
    text_opts: dict[str, Any],
    head: dict[str, Any],
    choice: Callable[[int, str, GenerateOutput | None], dict[str, Any]],
    n: int,
    include_usage: bool,
    opening: Sequence[dict[str, Any]] = (),
) -> AsyncIterator[bytes]:
    """The stream both OpenAI routes send, each chunk `head` (id, created, model, object) plus its choices:
    the `opening` choices, a chunk per non-empty text delta, a last chunk per choice with the rest of its
    final text, the usage chunk if asked, then [DONE]. `choice(index, text, output)` builds the choice the
    route's format wants; output is None until the choice has finished. `run` is the requests' StreamRun."""
    streams = [
        TextStream(state.engine.tokenizer, r.sampling.stop, text_opts.get("skip_special_tokens", True))
        for r in requests
    ]
    outputs: list[GenerateOutput] = []
    for first in opening:
        yield sse({**head, "choices": [first]})
    async for index, part, whole in run:
        if whole is None:
            delta = streams[index].push(part.output_ids)
            if delta:
                yield sse({**head, "choices": [choice(index, delta, None)]})
        else:
            outputs.append(whole)
            tail = streams[index].finish(_final_text(state, whole, text_opts))
            yield sse({**head, "choices": [choice(index, tail, whole)]})
    if include_usage:
        yield sse({**head, "choices": [], "usage": _usage(outputs, n)})
    yield SSE_DONE


def _stream_response(
    state: ServerState, request: Request, requests: list[GenerateRequest], chunks: Callable[[StreamRun], Any]
) -> StreamingResponse:
    """The requests submitted now (a refusal is a JSON error, not a cut stream; see stream_requests), then
    the response streaming `chunks(run)`."""
    intervals = [state.config.stream_interval] * len(requests)
    run = stream_requests(state, request, requests, [None] * len(requests), intervals)
    return sse_response(chunks(run), run.close)


# ---- /v1/completions ---------------------------------------------------------------------------------------
def _prompts(state: ServerState, prompt: Any) -> list[list[int]] | list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return prompt
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return [prompt]
        if all(isinstance(p, list) for p in prompt):
            return prompt
    raise RequestError(
        "prompt must be a string, a list of strings, a list of token ids or a list of such lists"
    )


@router.post("/v1/completions")
async def completions(request: Request):
    state = state_of(request)
    body = _object(await read_json(request), _COMPLETION)
    if body.get("echo"):
        raise RequestError("echo=true is not supported by this server")
    if body.get("suffix"):
        raise RequestError("suffix is not supported by this server")
    n, seed = _n_and_seed(state, body)
    if body.get("best_of") is not None and check_int("best_of", body["best_of"]) != n:
        raise RequestError(f"best_of={body['best_of']!r}: only best_of = n is supported")
    logprobs = body.get("logprobs")
    top = 0 if logprobs is None else check_int("logprobs", logprobs, 0, 20)
    stream = check_bool("stream", body.get("stream") or False)
    include_usage = _stream_options(body)
    prompts = _prompts(state, body.get("prompt"))
    if isinstance(prompts[0], str):
        if state.engine.tokenizer is None:
            raise RequestError("this server has no tokenizer: send token ids as the prompt")
        check_text_length(state.engine, prompts, "prompt")
        check_unicode(prompts, "prompt")
        tok = state.engine.tokenizer
        prompts = await state.tokenize(lambda: [tok(p).input_ids for p in prompts])
    requests, text_opts = _requests(
        state, prompts, _sampling(body, 16), n, seed, max(top, 1) if logprobs is not None else 0
    )
    meta = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": state.model_name}
    if stream:
        args = (text_opts, meta, n, top, logprobs, include_usage)
        return _stream_response(
            state, request, requests, lambda run: _completion_stream(state, run, requests, *args)
        )
    outputs, _ = await run_requests(state, request, requests, [None] * len(requests))
    choices = []
    for index, out in enumerate(outputs):
        choice = {
            "index": index,
            "text": _final_text(state, out, text_opts),
            "logprobs": None,
            "finish_reason": _finish(out),
            "matched_stop": out.matched_stop,
        }
        if logprobs is not None:
            choice["logprobs"] = _completion_logprobs(state, out, top)
        choices.append(choice)
    return {**meta, "object": "text_completion", "choices": choices, "usage": _usage(outputs, n)}


def _completion_logprobs(state: ServerState, out: GenerateOutput, top: int) -> dict[str, Any]:
    tok = state.engine.tokenizer
    tokens = [_token_str(tok, t) for t in out.output_ids]
    offsets, pos = [], 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    return {
        "tokens": tokens,
        "token_logprobs": list(out.logprobs),
        "top_logprobs": [{_token_str(tok, t): lp for t, lp in pos_[:top]} for pos_ in out.top_logprobs]
        if top
        else None,
        "text_offset": offsets,
    }


def _completion_stream(
    state, run, requests, text_opts, meta, n, top, logprobs, include_usage
) -> AsyncIterator[bytes]:
    def choice(index: int, text: str, out: GenerateOutput | None) -> dict[str, Any]:
        lp = _completion_logprobs(state, out, top) if out is not None and logprobs is not None else None
        finish = _finish(out) if out is not None else None
        return {"index": index, "text": text, "logprobs": lp, "finish_reason": finish}

    head = {**meta, "object": "text_completion"}
    return _choice_stream(state, run, requests, text_opts, head, choice, n, include_usage)


# ---- /v1/chat/completions ----------------------------------------------------------------------------------
def _messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages must be a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise RequestError(f"messages[{i}] must be an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in _ROLES:
            raise RequestError(f"messages[{i}].role={role!r}: expected one of {sorted(_ROLES)}")
        if isinstance(content, list):  # content parts: text only
            texts = []
            for j, part in enumerate(content):
                if (
                    not isinstance(part, dict)
                    or part.get("type") != "text"
                    or not isinstance(part.get("text"), str)
                ):
                    raise RequestError(
                        f"messages[{i}].content[{j}]: only {{'type': 'text', 'text': ...}} parts"
                    )
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be a string or a list of text parts")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


# apply_chat_template's own parameters (and the names its renderer passes the template): a client must not
# set them through chat_template_kwargs. `chat_template` above all: a template from the request would run
# client code on the server (a render that never ends); the rest change what is rendered or returned.
_RESERVED_TEMPLATE_KWARGS = frozenset(
    {
        "chat_template",
        "conversation",
        "conversations",
        "messages",
        "tools",
        "documents",
        "add_generation_prompt",
        "continue_final_message",
        "tokenize",
        "sanitize_control_tokens",
        "padding",
        "truncation",
        "max_length",
        "return_tensors",
        "return_dict",
        "return_assistant_tokens_mask",
        "tokenizer_kwargs",
    }
)


def _template_kwargs(raw: Any) -> dict[str, Any]:
    """chat_template_kwargs: variables for the model's own template (e.g. enable_thinking), plain values
    only; a list or object could feed the template's loops."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RequestError("chat_template_kwargs must be an object")
    for key, value in raw.items():
        if key in _RESERVED_TEMPLATE_KWARGS:
            what = "the server uses its model's chat template" if key == "chat_template" else "not settable"
            raise HTTPError(400, f"chat_template_kwargs.{key}: {what}", f"chat_template_kwargs.{key}")
        if value is not None and not isinstance(value, (str, bool, int, float)):
            raise HTTPError(
                400,
                f"chat_template_kwargs.{key}: must be a string, number, boolean or null "
                f"(got {type(value).__name__})",
                f"chat_template_kwargs.{key}",
            )
        if isinstance(value, str):
            check_unicode([value], f"chat_template_kwargs.{key}")
    return raw


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    state = state_of(request)
    body = _object(await read_json(request), _CHAT)
    for key in ("tools", "response_format"):
        if body.get(key):
            raise RequestError(f"{key} is not supported by this server")
    tokenizer = state.engine.tokenizer
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise RequestError("this model's tokenizer has no chat template: use /v1/completions")
    messages = _messages(body.get("messages"))
    contents = [m["content"] for m in messages]
    check_text_length(state.engine, contents, "messages.content")
    for i, content in enumerate(contents):
        check_unicode([content], f"messages[{i}].content")
    n, seed = _n_and_seed(state, body)
    want_lp = check_bool("logprobs", body.get("logprobs") or False)
    top = check_int("top_logprobs", body.get("top_logprobs") or 0, 0, 20)
    if top and not want_lp:
        raise RequestError("top_logprobs needs logprobs=true")
    stream = check_bool("stream", body.get("stream") or False)
    include_usage = _stream_options(body)
    kwargs = _template_kwargs(body.get("chat_template_kwargs"))

    def render() -> list[int]:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
        # the template adds its own text (and kwargs' strings): bound what is tokenized, not only the contents
        check_text_length(state.engine, [text], "the rendered chat prompt")
        check_unicode([text], "the rendered chat prompt")
        # as apply_chat_template(tokenize=True) does: the template already wrote the special tokens
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    try:
        prompt = await state.tokenize(render)
    except (TemplateError, TypeError, ValueError, KeyError) as e:  # the model's template refused the input
        if isinstance(e, RequestError):
            raise
        raise RequestError(f"messages: the chat template failed: {type(e).__name__}: {e}"[:500]) from None
    sampling = _sampling(body, None, "max_completion_tokens")
    requests, text_opts = _requests(state, [prompt], sampling, n, seed, max(top, 1) if want_lp else 0)
    meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": state.model_name}
    if stream:
        args = (text_opts, meta, n, top, want_lp, include_usage)
        return _stream_response(
            state, request, requests, lambda run: _chat_stream(state, run, requests, *args)
        )
    outputs, _ = await run_requests(state, request, requests, [None] * len(requests))
    choices = []
    for index, out in enumerate(outputs):
        choices.append(
            {
                "index": index,
                "message": {
                    "role": "assistant",
                    "content": _final_text(state, out, text_opts),
                    "tool_calls": None,
                },
                "logprobs": _chat_logprobs(state, out, top) if want_lp else None,
                "finish_reason": _finish(out),
                "matched_stop": out.matched_stop,
            }
        )
    return {**meta, "object": "chat.completion", "choices": choices, "usage": _usage(outputs, n)}


def _chat_logprobs(state: ServerState, out: GenerateOutput, top: int) -> dict[str, Any]:
    tok = state.engine.tokenizer

    def entry(t: int, lp: float) -> dict[str, Any]:
        s = _token_str(tok, t)
        return {"token": s, "logprob": lp, "bytes": list(s.encode())}

    content = []
    for i, (t, lp) in enumerate(zip(out.output_ids, out.logprobs)):
        tops = out.top_logprobs[i][:top] if top and i < len(out.top_logprobs) else []
        content.append({**entry(t, lp), "top_logprobs": [entry(tt, tlp) for tt, tlp in tops]})
    return {"content": content}


def _chat_stream(
    state, run, requests, text_opts, meta, n, top, want_lp, include_usage
) -> AsyncIterator[bytes]:
    def choice(index: int, text: str, out: GenerateOutput | None) -> dict[str, Any]:
        lp = _chat_logprobs(state, out, top) if out is not None and want_lp else None
        finish = _finish(out) if out is not None else None
        return {
            "index": index,
            "delta": {"content": text} if text else {},
            "logprobs": lp,
            "finish_reason": finish,
        }

    # OpenAI's first chunk of each choice names the role, before any content
    opening = [
        {
            "index": index,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        for index in range(len(requests))
    ]
    head = {**meta, "object": "chat.completion.chunk"}
    return _choice_stream(state, run, requests, text_opts, head, choice, n, include_usage, opening)
