"""The engine contract over SGLang's native HTTP API: a real SGLang server or router, or `latr-sglang serve`.

Each request is its own POST /generate (with ``input_ids``), sent concurrently: the server batches them, and
a branch's continuation is answered as soon as it is done rather than with the slowest of a batch.
`generate_in_parts` streams one (``stream: true``): SGLang's events become the parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from latr_sglang.engines.base import GenerateOutput, GenerateRequest, RequestError, check_part_ends
from latr_sglang.engines.wire import (
    StreamError,
    output_from_sglang,
    parts_from_sglang_stream,
    request_to_sglang,
    stream_interval,
)


def model_eos_ids(model_path: str, tokenizer: Any = None) -> frozenset[int]:
    """The ids an SGLang server stops on for this model, for the driver's `eos_ids`: the eos_token_id of the
    model's generation_config.json (an int or a list: an instruct model's `<|im_end|>` is often only there)
    and the tokenizer's eos_token_id, as SGLang's model config and scheduler take them. Passing only
    `tokenizer.eos_token_id` would let a branch continue past a stop the server makes."""
    from transformers import GenerationConfig

    ids: set[int] = set()
    try:
        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # no generation_config.json: SGLang then has only the tokenizer's
        eos = None
    ids.update([eos] if isinstance(eos, int) else (eos or []))
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)


ROUTING_KEY_HEADER = "X-SMG-Routing-Key"


class EngineHTTPError(RuntimeError):
    def __init__(self, status: int, message: str, url: str) -> None:
        super().__init__(f"{url} answered {status}: {message}")
        self.status = status
        self.message = message


def _http_error(status: int, text: str, url: str) -> Exception:
    """A 4xx as RequestError (the request is at fault), a 5xx as EngineHTTPError; the server's message."""
    with contextlib.suppress(Exception):
        text = json.loads(text)["error"]["message"]
    if status < 500:
        return RequestError(f"{url}: {text}")
    return EngineHTTPError(status, text, url)


async def _sse_events(content: Any, url: str) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of a server-sent event stream up to `data: [DONE]` (events of any size)."""
    buffer = b""
    async for chunk in content.iter_any():
        buffer += chunk
        *events, buffer = buffer.split(b"\n\n")
        for raw in events:
            for line in raw.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    raise EngineHTTPError(200, f"a stream event is not JSON: {data[:200]!r}", url) from None
                if isinstance(event, dict) and "error" in event:
                    error = event["error"]
                    message = error.get("message", error) if isinstance(error, dict) else error
                    raise EngineHTTPError(200, f"the stream failed: {message}", url)
                yield event


def auth_headers(api_key: str | None) -> dict[str, str]:
    """What a server started with --api-key checks on every request (SGLang's bearer token)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class SGLangHTTPEngine:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        max_connections: int = 256,
        timeout_s: float = 3600.0,
        retries: int = 2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = auth_headers(api_key)
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self.retries = retries
        self._session = None
        self._session_loop = None
        self._incremental_stream: bool | None = None  # the server's --incremental-streaming-output, once read

    async def _client(self):
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers=self.headers,
            )
            self._session_loop = loop
        return self._session

    async def _request(
        self, method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        import aiohttp

        session = await self._client()
        url = self.base_url + path
        for attempt in range(self.retries + 1):
            try:
                async with session.request(method, url, json=payload, headers=headers) as resp:
                    if resp.status >= 400:
                        raise _http_error(resp.status, await resp.text(), url)
                    if resp.content_type == "application/json":
                        return await resp.json()
                    return await resp.text()
            except (TimeoutError, aiohttp.ClientConnectionError):
                if attempt == self.retries:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _payload(request: GenerateRequest) -> tuple[dict[str, Any], dict[str, str] | None]:
        payload = request_to_sglang(request)
        headers = None
        if request.routing_key is not None:
            # GenerateReqInput.routing_key (SGLang 0.5.23) and the gateway's header (sgl-model-gateway reads
            # x-smg-routing-key, as SGLang's own request metrics do): a group's requests share one key, so a
            # router with a routing-key policy keeps a tree on the worker whose radix cache holds its prefix.
            payload["routing_key"] = request.routing_key
            headers = {ROUTING_KEY_HEADER: request.routing_key}
        return payload, headers

    @staticmethod
    def _check(request: GenerateRequest) -> None:
        if not request.input_ids:
            raise RequestError("input_ids is empty: a request needs at least one token")
        request.sampling.validate()

    async def generate_one(self, request: GenerateRequest) -> GenerateOutput:
        payload, headers = self._payload(request)
        return output_from_sglang(await self._request("POST", "/generate", payload, headers=headers))

    async def generate(self, requests: list[GenerateRequest]) -> list[GenerateOutput]:
        for r in requests:
            self._check(r)
        return list(await asyncio.gather(*(self.generate_one(r) for r in requests)))

    async def _streams_increments(self) -> bool:
        """Whether the server's stream events carry only what is new (--incremental-streaming-output), from
        /get_server_info once (a server that does not say streams everything so far, SGLang's default)."""
        if self._incremental_stream is None:
            try:
                info = await self.get_server_info()
            except (RequestError, EngineHTTPError):
                info = {}
            increments = isinstance(info, dict) and info.get("incremental_streaming_output")
            self._incremental_stream = bool(increments)
        return self._incremental_stream

    async def generate_in_parts(
        self, request: GenerateRequest, part_ends: Iterable[int]
    ) -> AsyncIterator[GenerateOutput]:
        """One request streamed (``stream: true``): each of SGLang's events with new tokens is a part
        (finish_reason None, only its new tokens), the final event the rest. The request's stream interval is
        the spacing of `part_ends`, so SGLang sends an event at its first token and then every that many
        (each part end is handed over at the first event at or after it). Closing the iterator early closes
        the connection, and the server aborts the request. A stream that breaks before its first token is
        sent again (`retries`, as whole requests are); after it, EngineHTTPError says how far it got."""
        import aiohttp

        ends = check_part_ends(part_ends)
        self._check(request)
        incremental = await self._streams_increments()
        payload, headers = self._payload(request)
        payload["stream"] = True
        payload["sampling_params"]["stream_interval"] = stream_interval(ends, request.sampling.max_new_tokens)
        url = self.base_url + "/generate"
        streamed = 0  # tokens handed over
        for attempt in range(self.retries + 1):
            try:
                async with contextlib.aclosing(self._stream(url, payload, headers, incremental)) as outs:
                    async for out in outs:
                        streamed += len(out.output_ids) if out.finish_reason is None else 0
                        yield out
                return
            except (TimeoutError, aiohttp.ClientError) as e:
                if streamed or attempt == self.retries:
                    raise EngineHTTPError(
                        0, f"the stream broke after {streamed} tokens ({type(e).__name__}: {e})", url
                    ) from e
                await asyncio.sleep(0.5 * 2**attempt)

    async def _stream(
        self, url: str, payload: dict[str, Any], headers: dict[str, str] | None, incremental: bool
    ) -> AsyncIterator[GenerateOutput]:
        """One POST of a streamed request: its parts, then its final output once the connection is free."""
        session = await self._client()
        final: GenerateOutput | None = None
        async with session.post(url, json=payload, headers=headers) as resp:
            if resp.status >= 400:
                raise _http_error(resp.status, await resp.text(), url)
            parts = parts_from_sglang_stream(_sse_events(resp.content, url), incremental)
            try:
                async for out in parts:
                    if out.finish_reason is not None:
                        final = out  # [DONE] is read: handed over below, with the connection back in the pool
                        break
                    yield out
            except StreamError as e:
                raise EngineHTTPError(200, str(e), url) from None
            finally:
                await parts.aclose()
                if final is None:
                    resp.close()  # the server sees the client go and aborts the request
        yield final

    async def get_model_info(self) -> dict[str, Any]:
        return await self._request("GET", "/get_model_info")

    async def get_server_info(self) -> dict[str, Any]:
        return await self._request("GET", "/get_server_info")

    async def update_weights(self, named_tensors: Any) -> None:
        """From a folder path (/update_weights_from_disk). Tensors go through the distributed weight sync."""
        if not isinstance(named_tensors, str):
            raise TypeError(
                "over HTTP, update_weights takes a local folder path; tensors are pushed through SGLang's "
                "distributed weight-update group"
            )
        result = await self._request("POST", "/update_weights_from_disk", {"model_path": named_tensors})
        if isinstance(result, dict) and not result.get("success", True):
            raise RuntimeError(f"update_weights_from_disk failed: {result.get('message')}")

    async def flush_cache(self) -> None:
        await self._request("POST", "/flush_cache")

    async def _checked(self, path: str, payload: dict[str, Any]) -> None:
        result = await self._request("POST", path, payload)
        if isinstance(result, dict) and not result.get("success", True):
            raise RuntimeError(f"{self.base_url}{path} failed: {result.get('message')}")

    # ---- SGLang's distributed weight update: the trainer broadcasts, the server receives ------------------
    async def init_weights_update_group(
        self,
        master_address: str,
        master_port: int,
        rank_offset: int,
        world_size: int,
        group_name: str = "weight_update_group",
        backend: str = "nccl",
    ) -> None:
        await self._checked(
            "/init_weights_update_group",
            {
                "master_address": master_address,
                "master_port": master_port,
                "rank_offset": rank_offset,
                "world_size": world_size,
                "group_name": group_name,
                "backend": backend,
            },
        )

    async def update_weights_from_distributed(
        self,
        names: list[str],
        dtypes: list[Any],
        shapes: list[list[int]],
        group_name: str = "weight_update_group",
        flush_cache: bool = False,
        load_format: str | None = None,
    ) -> None:
        """Returns once the server has received the tensors the trainer broadcasts (in `names` order).

        load_format="flattened_bucket": the trainer broadcasts them as one uint8 tensor
        (latr_sglang.engines.weight_sync.push_weights)
        """
        payload = {
            "names": list(names),
            "dtypes": [str(d).removeprefix("torch.") for d in dtypes],
            "shapes": [list(s) for s in shapes],
            "group_name": group_name,
            "flush_cache": flush_cache,
        }
        if load_format is not None:
            payload["load_format"] = load_format
        await self._checked("/update_weights_from_distributed", payload)

    async def update_weights_from_tensor(
        self, named_tensors: Any, *, serializer: str = "safetensors", flush_cache: bool = True
    ) -> None:
        """Colocated sync (engine and trainer on the same GPUs): /update_weights_from_tensor.

        serializer="sglang": SGLang's MultiprocessingSerializer (CUDA tensors travel as IPC handles, nothing
        is copied; one entry, for tensor-parallel size 1), what a real colocated SGLang server loads.
        "safetensors": the tensors' bytes, what `latr-sglang serve` accepts (it never unpickles input).
        """
        items = list(named_tensors.items()) if hasattr(named_tensors, "items") else list(named_tensors)
        if serializer == "sglang":
            import base64

            from sglang.srt.utils.common import MultiprocessingSerializer

            entry = base64.b64encode(MultiprocessingSerializer.serialize(items)).decode()
            payload: dict[str, Any] = {"serialized_named_tensors": [entry], "flush_cache": flush_cache}
        elif serializer == "safetensors":
            from latr_sglang.engines.wire import encode_named_tensors

            payload = {
                "serialized_named_tensors": [encode_named_tensors(items)],
                "load_format": "safetensors",
                "flush_cache": flush_cache,
            }
        else:
            raise ValueError(f"serializer={serializer!r}: expected 'safetensors' or 'sglang'")
        await self._checked("/update_weights_from_tensor", payload)

    async def release_memory_occupation(self, tags: list[str] | None = None) -> None:
        await self._checked("/release_memory_occupation", {"tags": tags} if tags else {})

    async def resume_memory_occupation(self, tags: list[str] | None = None) -> None:
        await self._checked("/resume_memory_occupation", {"tags": tags} if tags else {})

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
