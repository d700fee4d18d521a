"""The engine contract over an in-process ``sglang.Engine`` (GPU), with the same wire translation as HTTP.

``sglang.Engine.async_generate`` takes GenerateReqInput's fields as keyword arguments and returns the same
response objects as /generate, so requests and responses go through `latr_sglang.engines.wire` unchanged;
with ``stream=True`` it returns an async generator of /generate's stream events, which become the parts of
`generate_in_parts` as over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from latr_sglang.engines.base import GenerateOutput, GenerateRequest, check_part_ends
from latr_sglang.engines.wire import (
    output_from_sglang,
    parts_from_sglang_stream,
    request_to_sglang,
    stream_interval,
)


class SGLangInProcessEngine:
    def __init__(self, engine: Any) -> None:
        """`engine`: an ``sglang.Engine`` (or anything with its async_generate/flush_cache/... methods)."""
        self.engine = engine

    @classmethod
    def launch(cls, model_path: str, **server_args: Any) -> SGLangInProcessEngine:
        import os

        import sglang  # the GPU runtime: pip install 'latr-sglang[gpu]' or use the Docker image

        # Raw (pre-temperature) log-probs for the completion phase's importance-sampling correction.
        os.environ.setdefault("SGLANG_RETURN_ORIGINAL_LOGPROB", "1")
        return cls(sglang.Engine(model_path=model_path, **server_args))

    async def generate_one(self, request: GenerateRequest) -> GenerateOutput:
        return output_from_sglang(await self.engine.async_generate(**request_to_sglang(request)))

    async def generate(self, requests: list[GenerateRequest]) -> list[GenerateOutput]:
        return list(await asyncio.gather(*(self.generate_one(r) for r in requests)))

    def _streams_increments(self) -> bool:
        """The engine's --incremental-streaming-output (its tokenizer manager's copy of the server args;
        SGLang's default, cumulative events, where it has none)."""
        manager = getattr(self.engine, "tokenizer_manager", None)
        return bool(getattr(manager, "incremental_streaming_output", False))

    async def generate_in_parts(
        self, request: GenerateRequest, part_ends: Iterable[int]
    ) -> AsyncIterator[GenerateOutput]:
        """One request streamed (``async_generate(stream=True)``), its events as parts exactly as over HTTP
        (`SGLangHTTPEngine.generate_in_parts`). Closing the iterator early closes SGLang's generator, and its
        tokenizer manager aborts the request (SGLang 0.5.23: `generate_request` aborts a dispatched request
        on any exit but the end, GeneratorExit included)."""
        ends = check_part_ends(part_ends)
        kwargs = request_to_sglang(request)
        kwargs["stream"] = True
        kwargs["sampling_params"]["stream_interval"] = stream_interval(ends, request.sampling.max_new_tokens)
        events = await self.engine.async_generate(**kwargs)
        async with contextlib.aclosing(parts_from_sglang_stream(events, self._streams_increments())) as parts:
            async for out in parts:
                yield out

    async def update_weights(self, named_tensors: Any) -> None:
        items = list(named_tensors.items()) if isinstance(named_tensors, dict) else list(named_tensors)
        await asyncio.to_thread(self.engine.update_weights_from_tensor, named_tensors=items, flush_cache=True)

    async def flush_cache(self) -> None:
        await asyncio.to_thread(self.engine.flush_cache)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.shutdown)
