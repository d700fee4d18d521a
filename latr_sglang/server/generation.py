"""Generation routes in SGLang's native shapes: /generate (also stream=true), /tokenize, /detokenize,
/abort_request; and the machinery the OpenAI routes share: running engine requests so that a client that goes
away cancels its generation, streaming tokens as they are sampled, and per-request accounting."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from latr_sglang.engines.base import (
    FinishReason,
    GenerateOutput,
    GenerateRequest,
    RequestError,
    join_parts,
)
from latr_sglang.engines.wire import check_bool, check_int, output_to_sglang, sampling_params_from_sglang
from latr_sglang.server.core import (
    FieldError,
    HTTPError,
    ServerState,
    read_json,
    request_error,
    require_object,
    state_of,
)

router = APIRouter()

# GenerateReqInput fields with meaning here; any other field is accepted only when empty (null/false/[]/{}).
_HANDLED = {
    "text",
    "input_ids",
    "sampling_params",
    "return_logprob",
    "logprob_start_len",
    "top_logprobs_num",
    "return_text_in_logprobs",
    "stream",
    "rid",
    "routing_key",  # SGLang's key for a router's routing-key policy; one engine here, nothing to route
}
MAX_BATCH = 16384  # requests in one /generate call (an RL batch is a few thousand)
# Tokenizing more characters than this per context token cannot fit: refuse before spending seconds on it.
_CHARS_PER_TOKEN_BOUND_FACTOR = 2


def _per_item(body: dict[str, Any], key: str, n: int, default: Any, batched: bool) -> list[Any]:
    """An option that may be given once for the batch or as a list with one entry per item."""
    value = body.get(key)
    if value is None:
        value = default
    if batched and isinstance(value, list):
        if len(value) != n:
            raise RequestError(f"{key} has {len(value)} entries for a batch of {n}")
        return value
    return [value] * n


def max_text_chars(engine: Any) -> int:
    """A bound on the characters of a text whose tokens can fit the context (a token covers at most the
    longest vocabulary entry's characters; doubled for tokenizers that normalise text away)."""
    cached = getattr(engine, "_latr_max_text_chars", None)
    if cached is None:
        longest = max((len(t) for t in engine.tokenizer.get_vocab()), default=16)
        cached = engine.context_length * max(longest, 1) * _CHARS_PER_TOKEN_BOUND_FACTOR
        engine._latr_max_text_chars = cached
    return cached


def check_text_length(engine: Any, texts: list[str], field: str) -> None:
    limit = max_text_chars(engine)
    for i, t in enumerate(texts):
        if len(t) > limit:
            name = field if len(texts) == 1 else f"{field}[{i}]"
            raise RequestError(
                f"{name} has {len(t)} characters: more tokens than the context length "
                f"{engine.context_length} can hold (at most {limit} characters are considered)"
            )


def check_unicode(texts: Sequence[str], field: str) -> None:
    """Refuses a text with a lone surrogate (JSON allows "\\ud800"; a tokenizer cannot encode it and would
    fail with a TypeError deep inside, a 500)."""
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            name = field if len(texts) == 1 else f"{field}[{i}]"
            raise FieldError(f"{name}: not valid Unicode (lone surrogate at {e.start})", name) from None


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return [tokenizer(t).input_ids for t in texts]


def _validate_body_shape(body: Any) -> tuple[dict[str, Any], bool, bool]:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for key, value in body.items():
        if key not in _HANDLED and value not in (None, False, [], {}):
            raise RequestError(f"field {key!r} is not supported by this server")
    has_text, has_ids = body.get("text") is not None, body.get("input_ids") is not None
    if has_text == has_ids:
        raise RequestError("exactly one of 'text' and 'input_ids' must be given")
    return body, has_text, has_ids


def _build_requests(
    body: dict[str, Any], id_lists: list[Any], batched: bool, engine: Any
) -> tuple[list[GenerateRequest], list[dict]]:
    n = len(id_lists)
    if n == 0:
        raise RequestError("the batch is empty")
    sampling = _per_item(body, "sampling_params", n, {}, batched)
    return_logprob = _per_item(body, "return_logprob", n, False, batched)
    start_len = _per_item(body, "logprob_start_len", n, -1, batched)
    top_num = _per_item(body, "top_logprobs_num", n, 0, batched)
    text_in_lp = check_bool("return_text_in_logprobs", body.get("return_text_in_logprobs") or False)
    if n > MAX_BATCH:
        raise RequestError(f"the batch has {n} requests; at most {MAX_BATCH} per call")
    requests, options = [], []
    for i, ids in enumerate(id_lists):
        if not isinstance(ids, list):
            raise RequestError(f"input_ids[{i}] must be a list of token ids")
        if len(ids) >= engine.context_length:  # before checking each id: a 10M-token list fails at once
            name = f"input_ids[{i}]" if batched else "input_ids"
            raise RequestError(
                f"{name} has {len(ids)} tokens, the model's context length is {engine.context_length}: "
                "no room to generate"
            )
        sp, text_opts = sampling_params_from_sglang(sampling[i])
        want_lp = check_bool("return_logprob", return_logprob[i] or False)
        top = check_int("top_logprobs_num", top_num[i] if top_num[i] is not None else 0, 0, 100)
        start = check_int("logprob_start_len", start_len[i] if start_len[i] is not None else -1, -1)
        req = GenerateRequest(
            input_ids=tuple(ids),
            sampling=sp,
            top_logprobs_num=top if want_lp else 0,
            logprob_start_len=start if want_lp else -1,
        )
        engine.validate(req)
        requests.append(req)
        options.append(
            {"return_logprob": want_lp, "return_text_in_logprobs": text_in_lp, "text_opts": text_opts}
        )
    return requests, options


def _rids(body: dict[str, Any], n: int, batched: bool) -> list[str | None]:
    rid = body.get("rid")
    if rid is None:
        return [None] * n
    rids = rid if isinstance(rid, list) else [rid]
    if batched != isinstance(rid, list) or len(rids) != n:
        raise RequestError(f"rid={rid!r}: give one string per request ({n})")
    for r in rids:
        if not isinstance(r, str) or not 0 < len(r) <= 256:
            raise RequestError(f"rid={r!r}: must be a non-empty string of at most 256 characters")
    if len(set(rids)) != len(rids):
        raise RequestError(f"rid={rid!r}: the ids repeat")
    return rids


def parse_generate_body(body: Any, engine: Any) -> tuple[list[GenerateRequest], list[dict], bool]:
    """A /generate JSON body as engine requests, per-item response options, and whether it was a batch.
    Tokenizes on the calling thread (see parse_generate_body_async for the server's way)."""
    body, has_text, _ = _validate_body_shape(body)
    if has_text:
        texts, batched = _texts(body["text"], engine)
        id_lists = _encode(engine.tokenizer, texts)
    else:
        id_lists, batched = _id_lists(body["input_ids"])
    requests, options = _build_requests(body, id_lists, batched, engine)
    return requests, options, batched


def _texts(text: Any, engine: Any) -> tuple[list[str], bool]:
    batched = isinstance(text, list)
    texts = text if batched else [text]
    if not all(isinstance(t, str) for t in texts):
        raise RequestError("text must be a string or a list of strings")
    if engine.tokenizer is None:
        raise RequestError("this server has no tokenizer: send input_ids")
    check_text_length(engine, texts, "text")
    check_unicode(texts, "text")
    return texts, batched


def _id_lists(ids: Any) -> tuple[list[Any], bool]:
    if not isinstance(ids, list):
        raise RequestError("input_ids must be a list of token ids or a list of such lists")
    batched = bool(ids) and isinstance(ids[0], list)
    return (ids if batched else [ids]), batched


async def parse_generate_body_async(
    state: ServerState, body: Any
) -> tuple[list[GenerateRequest], list[dict], bool, list[str | None]]:
    body, has_text, _ = _validate_body_shape(body)
    if has_text:
        texts, batched = _texts(body["text"], state.engine)
        id_lists = await state.tokenize(_encode, state.engine.tokenizer, texts)
        for i, ids in enumerate(id_lists):
            if not ids:
                raise RequestError(
                    "text is empty: it has no tokens" if not batched else f"text[{i}] is empty"
                )
    else:
        id_lists, batched = _id_lists(body["input_ids"])
    requests, options = _build_requests(body, id_lists, batched, state.engine)
    rids = _rids(body, len(requests), batched)
    check_bool("stream", body.get("stream") or False)
    return requests, options, batched, rids


async def generate_from_body(engine: Any, body: Any) -> dict | list:
    """What SGLang's /generate (and sglang.Engine.async_generate) returns for `body`. Raises RequestError."""
    requests, options, batched = parse_generate_body(body, engine)
    outputs = await engine.generate(requests)
    responses = [
        output_to_sglang(out, engine.tokenizer, rid=f"latr-{i}", **opts)
        for i, (out, opts) in enumerate(zip(outputs, options))
    ]
    return responses if batched else responses[0]


# ---- running requests -------------------------------------------------------------------------------------
def _check_serving(state: ServerState) -> None:
    if "weights" in state.memory_released or "kv_cache" in state.memory_released:
        raise HTTPError(503, "memory is released: call /resume_memory_occupation before generating")


def _register(state: ServerState, rids: list[str | None]) -> list[str]:
    out = []
    for rid in rids:
        if rid is not None and rid in state.inflight:
            raise HTTPError(400, f"rid={rid!r} is already in flight", "rid")
    for rid in rids:
        rid = rid or state.new_rid()
        state.inflight[rid] = []
        out.append(rid)
    return out


def account(request: Request | None, state: ServerState, outputs: list[GenerateOutput]) -> None:
    m = state.metrics
    m.generate_requests += len(outputs)
    prompt = sum(o.prompt_tokens for o in outputs)
    completion = sum(o.completion_tokens for o in outputs)
    m.prompt_tokens += prompt
    m.generation_tokens += completion
    m.cached_tokens += sum(o.cached_tokens for o in outputs)
    m.aborted_requests += sum(o.finish_reason == FinishReason.ABORT for o in outputs)
    if request is not None:
        st = request.scope.setdefault("state", {})
        st["latr_prompt_tokens"] = st.get("latr_prompt_tokens", 0) + prompt
        st["latr_completion_tokens"] = st.get("latr_completion_tokens", 0) + completion


async def _wait_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body is read by then, so receive() only reports that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def run_requests(
    state: ServerState, request: Request | None, requests: list[GenerateRequest], rids: list[str | None]
) -> tuple[list[GenerateOutput], list[str]]:
    """Generates all `requests`; cancels them in the engine if the client disconnects (then raises
    asyncio.CancelledError) or the handler is cancelled (shutdown)."""
    _check_serving(state)
    rids = _register(state, rids)
    loop = asyncio.get_running_loop()
    futures = []
    try:
        for req, rid in zip(requests, rids):
            fut = loop.create_future()

            def deliver(out: GenerateOutput, fut: asyncio.Future = fut) -> None:
                loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(out))

            try:
                state.inflight[rid].append(state.engine.submit(req, deliver))
            except RuntimeError as e:  # the engine is closed: shutting down
                raise HTTPError(503, f"the engine is not serving: {e}") from None
            futures.append(fut)
        gathered = asyncio.ensure_future(asyncio.gather(*futures))
        watcher = asyncio.ensure_future(_wait_disconnect(request)) if request is not None else None
        try:
            waiting = {gathered} | ({watcher} if watcher else set())
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if watcher is not None:
                watcher.cancel()
        if not gathered.done():  # the client left: stop decoding for it
            gathered.cancel()
            raise asyncio.CancelledError("client disconnected")
        outputs = gathered.result()
    except BaseException:
        for rid in rids:
            for handle in state.inflight.get(rid, []):
                handle.cancel()
        raise
    finally:
        for rid in rids:
            state.inflight.pop(rid, None)
    account(request, state, outputs)
    return outputs, rids


def stream_part_ends(max_new_tokens: int, interval: int) -> range:
    """The output lengths at which a streamed request sends an event, as SGLang's scheduler does: the first
    token at once, then whenever `interval` tokens are unsent (and its end, always)."""
    return range(1, max_new_tokens, interval)


class StreamRun:
    """Requests submitted for streaming (see `stream_requests`). Iterating yields (index, part, None) as
    each request's output is decoded (a part per event of its stream interval, `stream_part_ends`) and
    (index, rest, whole) when it ends. `close` cancels what is still running and accounts for what ended;
    it runs when the iteration ends or is closed, and when the response ends (a response whose client left
    before the first chunk never starts its iterator, and the requests must not stay registered)."""

    def __init__(self, state: ServerState, request: Request | None, rids: list[str], n: int) -> None:
        self.state, self.request, self.rids, self.n = state, request, rids, n
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.outputs: list[GenerateOutput] = []
        self.closed = False

    def __aiter__(self) -> AsyncIterator[tuple[int, GenerateOutput, GenerateOutput | None]]:
        return self._events()

    async def _events(self) -> AsyncIterator[tuple[int, GenerateOutput, GenerateOutput | None]]:
        parts: list[list[GenerateOutput]] = [[] for _ in range(self.n)]
        try:
            remaining = self.n
            while remaining:
                index, out, done = await self.queue.get()
                parts[index].append(out)
                whole = None
                if done:
                    remaining -= 1
                    whole = join_parts(parts[index])
                    self.outputs.append(whole)
                yield index, out, whole
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for rid in self.rids:
            for handle in self.state.inflight.pop(rid, []):
                handle.cancel()
        account(self.request, self.state, self.outputs)


def stream_requests(
    state: ServerState,
    request: Request | None,
    requests: list[GenerateRequest],
    rids: list[str | None],
    intervals: Sequence[int],
) -> StreamRun:
    """Checks, registers and submits `requests` for streaming, now: a route calls it before it returns its
    StreamingResponse, so that a refusal known before any token (memory released, a rid in flight, the
    engine closed) is the same JSON error as without streaming, not a stream cut off after its headers.
    Pass the result's `close` to `sse_response`."""
    _check_serving(state)
    run = StreamRun(state, request, _register(state, rids), len(requests))
    try:
        for i, (req, rid, interval) in enumerate(zip(requests, run.rids, intervals)):

            def on_part(out: GenerateOutput, i: int = i) -> None:
                run.loop.call_soon_threadsafe(run.queue.put_nowait, (i, out, False))

            def on_done(out: GenerateOutput, i: int = i) -> None:
                run.loop.call_soon_threadsafe(run.queue.put_nowait, (i, out, True))

            ends = stream_part_ends(req.sampling.max_new_tokens, interval)
            try:
                state.inflight[rid].append(state.engine.submit(req, on_done, on_part, ends))
            except RuntimeError as e:
                raise HTTPError(503, f"the engine is not serving: {e}") from None
    except BaseException:
        run.close()
        raise
    return run


class TextStream:
    """Incremental text of one output: deltas that never need taking back (an incomplete UTF-8 character
    and anything that may still become a stop string are held until they are settled)."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...], skip_special_tokens: bool = True) -> None:
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.hold = max((len(s) for s in stop), default=0)
        self.ids: list[int] = []
        self.sent = ""

    def push(self, tokens: Sequence[int]) -> str:
        self.ids.extend(tokens)
        if self.tokenizer is None:
            return ""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip)
        if text.endswith("\ufffd"):
            return ""
        settled = text[: len(text) - self.hold] if self.hold else text
        return self._advance(settled)

    def finish(self, final_text: str) -> str:
        return self._advance(final_text)

    def _advance(self, text: str) -> str:
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        delta = text[len(self.sent) :]
        self.sent = text
        return delta


def sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


class _SSEResponse(StreamingResponse):
    """A StreamingResponse that runs `on_close` when it ends however it ends (see StreamRun.close)."""

    def __init__(self, chunks: AsyncIterator[bytes], on_close: Callable[[], None] | None) -> None:
        super().__init__(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.on_close is not None:
                self.on_close()


def sse_response(
    chunks: AsyncIterator[bytes], on_close: Callable[[], None] | None = None
) -> StreamingResponse:
    return _SSEResponse(chunks, on_close)


# ---- routes -----------------------------------------------------------------------------------------------
@router.api_route("/generate", methods=["POST", "PUT"])
async def generate(request: Request):
    state = state_of(request)
    body = await read_json(request)
    try:
        requests, options, batched, rids = await parse_generate_body_async(state, body)
    except RequestError as e:
        raise request_error(e) from None
    engine = state.engine
    rids = [rid or state.new_rid() for rid in rids]
    if body.get("stream"):
        intervals = [o["text_opts"]["stream_interval"] or state.config.stream_interval for o in options]
        run = stream_requests(state, request, requests, rids, intervals)
        return sse_response(_generate_stream(state, run, requests, options, batched, rids), run.close)
    outputs, rids = await run_requests(state, request, requests, rids)
    responses = [
        output_to_sglang(out, engine.tokenizer, rid=rid, **opts)
        for out, opts, rid in zip(outputs, options, rids)
    ]
    return JSONResponse(responses if batched else responses[0])


async def _generate_stream(state, run, requests, options, batched, rids) -> AsyncIterator[bytes]:
    async for event in stream_events(state, run, requests, options, batched, rids):
        yield sse(event)
    yield SSE_DONE


async def stream_events(
    state: ServerState,
    run: StreamRun,
    requests: list[GenerateRequest],
    options: list[dict],
    batched: bool,
    rids: list[str],
) -> AsyncIterator[dict[str, Any]]:
    """SGLang's stream events of `run`: one per stream interval with the text, output ids and (if asked)
    output log-probs so far, or with only what is new under --incremental-streaming-output; the last event
    of a request is its whole response (its new part, incrementally). Over HTTP, [DONE] follows."""
    engine = state.engine
    incremental = state.config.incremental_streaming_output
    texts = [
        TextStream(engine.tokenizer, r.sampling.stop, o["text_opts"].get("skip_special_tokens", True))
        for r, o in zip(requests, options)
    ]
    so_far: list[list[GenerateOutput]] = [[] for _ in requests]
    sent_tokens, sent_text = [0] * len(requests), [""] * len(requests)
    async for index, out, whole in run:
        opts = options[index]
        if whole is None:
            so_far[index].append(out)
            texts[index].push(out.output_ids)
            event = output_to_sglang(
                join_parts(so_far[index]), engine.tokenizer, rid=rids[index], text=texts[index].sent, **opts
            )
        else:
            event = output_to_sglang(whole, engine.tokenizer, rid=rids[index], **opts)
        if incremental:
            event["text"], sent_text[index] = event["text"][len(sent_text[index]) :], event["text"]
            start, sent_tokens[index] = sent_tokens[index], len(event["output_ids"])
            event["output_ids"] = event["output_ids"][start:]
            meta = event["meta_info"]
            for key in ("output_token_logprobs", "output_top_logprobs"):
                if key in meta:
                    meta[key] = meta[key][start:]
        if batched:
            event["index"] = index
        yield event


async def stream_from_body(state: ServerState, body: Any) -> AsyncIterator[dict[str, Any]]:
    """What ``sglang.Engine.async_generate(stream=True)`` yields for `body` (its keyword arguments): the
    events of /generate's stream, without [DONE]. Closing it early cancels the requests, as SGLang's
    tokenizer manager aborts them. Raises RequestError at the first iteration, as SGLang raises there."""
    requests, options, batched = parse_generate_body(body, state.engine)
    rids = [rid or state.new_rid() for rid in _rids(body, len(requests), batched)]
    intervals = [o["text_opts"]["stream_interval"] or state.config.stream_interval for o in options]
    run = stream_requests(state, None, requests, rids, intervals)
    events = stream_events(state, run, requests, options, batched, rids)
    async with contextlib.aclosing(events):
        try:
            async for event in events:
                yield event
        finally:
            run.close()


async def _tokenizer_request(request: Request, known: set[str]) -> tuple[ServerState, dict[str, Any], Any]:
    """The server state, the body (only `known` keys) and the tokenizer of a /tokenize or /detokenize call;
    the body is checked first, so that a malformed one gets its 400 even on a server without a tokenizer."""
    state = state_of(request)
    body = require_object(await read_json(request), known)
    tokenizer = state.engine.tokenizer
    if tokenizer is None:
        raise HTTPError(400, "this server has no tokenizer")
    return state, body, tokenizer


@router.api_route("/tokenize", methods=["POST"])
@router.api_route("/v1/tokenize", methods=["POST"])
async def tokenize(request: Request):
    """SGLang's TokenizeRequest: {"prompt": str | [str], "add_special_tokens": bool} -> tokens, count."""
    state, body, tokenizer = await _tokenizer_request(request, {"model", "prompt", "add_special_tokens"})
    prompt = body.get("prompt")
    batched = isinstance(prompt, list)
    prompts = prompt if batched else [prompt]
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise HTTPError(400, "prompt must be a string or a non-empty list of strings", "prompt")
    special = check_bool("add_special_tokens", body.get("add_special_tokens", True))
    try:
        check_text_length(state.engine, prompts, "prompt")
        check_unicode(prompts, "prompt")
    except RequestError as e:
        raise request_error(e) from None

    def encode() -> list[list[int]]:
        return [tokenizer(p, add_special_tokens=special).input_ids for p in prompts]

    tokens = await state.tokenize(encode)
    counts = [len(t) for t in tokens]
    return {
        "tokens": tokens if batched else tokens[0],
        "count": counts if batched else counts[0],
        "max_model_len": state.engine.context_length,
    }


@router.api_route("/detokenize", methods=["POST"])
@router.api_route("/v1/detokenize", methods=["POST"])
async def detokenize(request: Request):
    """SGLang's DetokenizeRequest: {"tokens": [int] | [[int]], "skip_special_tokens": bool} -> text."""
    state, body, tokenizer = await _tokenizer_request(request, {"model", "tokens", "skip_special_tokens"})
    tokens = body.get("tokens")
    if not isinstance(tokens, list):
        raise HTTPError(400, "tokens must be a list of token ids or a list of such lists", "tokens")
    batched = bool(tokens) and isinstance(tokens[0], list)
    lists = tokens if batched else [tokens]
    vocab = state.engine.vocab_size
    for ids in lists:
        if not isinstance(ids, list):
            raise HTTPError(400, "tokens must be a list of token ids or a list of such lists", "tokens")
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab:
                raise HTTPError(400, f"tokens contains {t!r}, outside the vocabulary [0, {vocab})", "tokens")
    skip = check_bool("skip_special_tokens", body.get("skip_special_tokens", True))
    texts = await state.tokenize(lambda: [tokenizer.decode(ids, skip_special_tokens=skip) for ids in lists])
    return {"text": texts if batched else texts[0]}


@router.post("/abort_request")
async def abort_request(request: Request):
    """SGLang's AbortReq: {"rid": str, "abort_all": bool}. The aborted requests answer with
    finish_reason abort."""
    state = state_of(request)
    body = require_object(await read_json(request), {"rid", "abort_all", "abort_message"})
    abort_all = check_bool("abort_all", body.get("abort_all", False))
    rid = body.get("rid")
    rids = [] if rid in (None, "") else rid if isinstance(rid, list) else [rid]
    if not all(isinstance(r, str) for r in rids):
        raise HTTPError(400, f"rid={rid!r}: must be a string or a list of strings", "rid")
    if not abort_all and not rids:
        raise HTTPError(400, "give rid (a request id) or abort_all=true", "rid")
    targets = list(state.inflight) if abort_all else [r for r in rids if r in state.inflight]
    for r in targets:
        for handle in state.inflight.get(r, []):
            handle.cancel()
    return Response(status_code=200)
