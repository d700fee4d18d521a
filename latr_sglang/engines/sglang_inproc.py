"""The engine contract over an in-process ``sglang.Engine`` (GPU), with the same wire translation as HTTP.

``sglang.Engine.async_generate`` takes GenerateReqInput's fields as keyword arguments and returns the same
response objects as /generate, so requests and responses go through `latr_sglang.engines.wire` unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from latr_sglang.engines.base import GenerateOutput, GenerateRequest
from latr_sglang.engines.wire import output_from_sglang, request_to_sglang


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

    async def update_weights(self, named_tensors: Any) -> None:
        items = list(named_tensors.items()) if isinstance(named_tensors, dict) else list(named_tensors)
        await asyncio.to_thread(self.engine.update_weights_from_tensor, named_tensors=items, flush_cache=True)

    async def flush_cache(self) -> None:
        await asyncio.to_thread(self.engine.flush_cache)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.shutdown)
