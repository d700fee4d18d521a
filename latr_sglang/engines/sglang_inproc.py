"""The engine contract over an in-process ``sglang.Engine`` (GPU), with the same wire translation as HTTP.

``sglang.Engine.async_generate`` takes GenerateReqInput's fields as keyword arguments and returns the same
response objects as /generate, so requests and responses go through `latr_sglang.engines.wire` unchanged;
with ``stream=True`` it returns an async generator of /generate's stream events, which become the parts of
`generate_in_parts` as over HTTP.

An ``sglang.Engine`` serves one event loop: its tokenizer manager receives every answer in a task on the loop
of its first request. Its synchronous methods (flush_cache, update_weights_from_tensor) run that manager's
coroutines with ``run_until_complete`` on ``engine.loop``, which fails while that loop runs, and the answer
comes only to the loop the manager serves; so this adapter awaits the manager's coroutines itself, on the
running loop, and refuses a call from a second loop by name instead of waiting forever. Drive it from one loop
(``engine.loop.run_until_complete``, or one ``asyncio.run`` for the whole job).
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
        """`engine`: an ``sglang.Engine`` (async_generate, tokenizer_manager, shutdown)."""
        self.engine = engine

    @classmethod
    def launch(cls, model_path: str, **server_args: Any) -> SGLangInProcessEngine:
        import os

        import sglang  # the GPU runtime: pip install 'latr-sglang[gpu]' or use the Docker image

        # Raw (pre-temperature) log-probs for the completion phase's importance-sampling correction.
        os.environ.setdefault("SGLANG_RETURN_ORIGINAL_LOGPROB", "1")
        return cls(sglang.Engine(model_path=model_path, **server_args))

    def _manager(self) -> Any:
        """The engine's tokenizer manager, once the running loop is known to be the one it serves."""
        manager = self.engine.tokenizer_manager
        bound = getattr(manager, "event_loop", None)
        if bound is not None and bound is not asyncio.get_running_loop():
            raise RuntimeError(
                "this sglang.Engine answers on the event loop of its first request, not on this one: drive "
                "SGLangInProcessEngine from one loop (engine.loop.run_until_complete, or one asyncio.run)"
            )
        return manager

    async def generate_one(self, request: GenerateRequest) -> GenerateOutput:
        self._manager()
        return output_from_sglang(await self.engine.async_generate(**request_to_sglang(request)))

    async def generate(self, requests: list[GenerateRequest]) -> list[GenerateOutput]:
        return list(await asyncio.gather(*(self.generate_one(r) for r in requests)))

    async def generate_in_parts(
        self, request: GenerateRequest, part_ends: Iterable[int]
    ) -> AsyncIterator[GenerateOutput]:
        """One request streamed (``async_generate(stream=True)``), its events as parts exactly as over HTTP
        (`SGLangHTTPEngine.generate_in_parts`). Closing the iterator early closes SGLang's generator, and its
        tokenizer manager aborts the request (SGLang 0.5.23: `generate_request` aborts a dispatched request
        on any exit but the end, GeneratorExit included)."""
        ends = check_part_ends(part_ends)
        # the engine's --incremental-streaming-output, as its tokenizer manager keeps it
        incremental = bool(getattr(self._manager(), "incremental_streaming_output", False))
        kwargs = request_to_sglang(request)
        kwargs["stream"] = True
        kwargs["sampling_params"]["stream_interval"] = stream_interval(ends, request.sampling.max_new_tokens)
        events = await self.engine.async_generate(**kwargs)
        async with contextlib.aclosing(parts_from_sglang_stream(events, incremental)) as parts:
            async for out in parts:
                yield out

    async def update_weights(self, named_tensors: Any) -> None:
        """Colocated: the tensors as SGLang's MultiprocessingSerializer sends them (CUDA tensors as IPC
        handles), one payload per tensor-parallel rank, as ``sglang.Engine.update_weights_from_tensor``
        builds them; then the prefix cache is flushed."""
        from sglang.srt.managers.io_struct import UpdateWeightsFromTensorReqInput
        from sglang.srt.utils.common import MultiprocessingSerializer

        manager = self._manager()
        items = list(named_tensors.items()) if isinstance(named_tensors, dict) else list(named_tensors)
        ranks = int(getattr(manager.server_args, "tp_size", 1) or 1)
        payload = MultiprocessingSerializer.serialize(items)
        obj = UpdateWeightsFromTensorReqInput(serialized_named_tensors=[payload] * ranks, flush_cache=True)
        success, message = await manager.update_weights_from_tensor(obj, None)
        if not success:
            raise RuntimeError(f"sglang.Engine refused the weights: {message}")

    async def flush_cache(self) -> None:
        result = await self._manager().flush_cache()
        if not getattr(result, "success", True):
            raise RuntimeError(f"sglang.Engine could not flush its cache: {getattr(result, 'message', '')}")

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.shutdown)
