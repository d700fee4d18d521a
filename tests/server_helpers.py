"""What the server tests share: a free loopback port, the `latr-sglang serve` command line, and a
weight-update group hosted by this process (the trainer, rank 0) that a live server joins at rank 1."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import requests

from latr_sglang.engines.weight_sync import DEFAULT_GROUP_NAME, WeightSyncGroup


async def aiohttp_server(routes: dict[str, Any]) -> tuple[Any, str]:
    """A small aiohttp app on a free loopback port (POST routes: path -> handler): its runner (cleanup()
    stops it) and its URL. For servers that answer as no real one does (wrong shapes, broken streams)."""
    from aiohttp import web

    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(model: str | Path, port: int | None = None, *extra: str) -> list[str]:
    """`latr-sglang serve --model MODEL [--port PORT] EXTRA...` as a user runs it, with this interpreter."""
    cmd = [sys.executable, "-m", "latr_sglang.cli", "serve", "--model", str(model)]
    if port is not None:
        cmd += ["--port", str(port)]
    return [*cmd, *extra]


def weight_group_body(port: int, group_name: str = DEFAULT_GROUP_NAME) -> dict[str, Any]:
    """An /init_weights_update_group body: join, at rank 1 of 2, the gloo group hosted on `port` here."""
    return {
        "master_address": "127.0.0.1",
        "master_port": port,
        "rank_offset": 1,
        "world_size": 2,
        "group_name": group_name,
        "backend": "gloo",
    }


def join_weight_group(
    server_url: str, body: dict[str, Any], timeout: float, **trainer: Any
) -> tuple[WeightSyncGroup, requests.Response | None]:
    """Hosts the group `body` names at rank 0 while the server joins it: both sides block until the other
    arrives, so the server's /init_weights_update_group call runs on a thread meanwhile. Returns this
    process's group and the server's answer (None if it did not answer within `timeout` seconds)."""
    joined: dict[str, requests.Response] = {}
    thread = threading.Thread(
        target=lambda: joined.update(
            r=requests.post(server_url + "/init_weights_update_group", json=body, timeout=timeout)
        )
    )
    thread.start()
    group = WeightSyncGroup(
        "127.0.0.1", body["master_port"], 0, 2, "gloo", group_name=body["group_name"], **trainer
    )
    thread.join(timeout)
    return group, joined.get("r")


class TorchBackedSGLangEngine:
    """CPU STAND-IN for sglang.Engine, tests only: sglang.Engine's runtime needs CUDA kernels. It answers
    async_generate(**GenerateReqInput fields) through our server's parser and response builder: a response
    object, or with stream=True an async generator of /generate's stream events, whose early close cancels
    the request (as SGLang 0.5.23's tokenizer manager aborts it). Its `tokenizer_manager` has the parts of
    SGLang's that SGLangInProcessEngine uses (see `StandInTokenizerManager`)."""

    def __init__(self, engine: Any, incremental_streaming_output: bool = False) -> None:
        from latr_sglang.server import ServerConfig
        from latr_sglang.server.core import ServerState

        self.engine = engine
        self.open_streams = 0  # streams not yet ended or closed
        config = ServerConfig(incremental_streaming_output=incremental_streaming_output)
        self.state = ServerState(engine, config)
        self.tokenizer_manager = StandInTokenizerManager(engine, incremental_streaming_output)

    async def async_generate(self, stream: bool = False, **kwargs: Any) -> Any:
        from latr_sglang.server import generate_from_body, stream_from_body

        self.tokenizer_manager.auto_create_handle_loop()
        if stream:
            return self._stream(stream_from_body(self.state, kwargs))
        return await generate_from_body(self.engine, kwargs)

    async def _stream(self, events: Any) -> Any:
        self.open_streams += 1
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        finally:
            self.open_streams -= 1

    def shutdown(self) -> None:
        self.state.close()


class StandInTokenizerManager:
    """What SGLangInProcessEngine uses of SGLang 0.5.23's TokenizerManager, tests only: the loop it serves
    (bound at the first call, `event_loop`), server_args.tp_size, incremental_streaming_output, and the
    coroutines flush_cache() -> FlushCacheReqOutput and update_weights_from_tensor(obj, request) ->
    (success, message), which load MultiprocessingSerializer payloads (one per TP rank) into the engine."""

    def __init__(self, engine: Any, incremental_streaming_output: bool) -> None:
        from types import SimpleNamespace

        self.engine = engine
        self.incremental_streaming_output = incremental_streaming_output
        self.server_args = SimpleNamespace(tp_size=1)
        self.event_loop = None
        self.flushed = 0
        self.loaded: list[list[str]] = []  # names per weight update

    def auto_create_handle_loop(self) -> None:
        if self.event_loop is None:
            import asyncio

            self.event_loop = asyncio.get_running_loop()

    async def flush_cache(self) -> Any:
        from types import SimpleNamespace

        self.auto_create_handle_loop()
        self.flushed += 1
        self.engine.flush_cache_sync()
        return SimpleNamespace(success=True, message="")  # FlushCacheReqOutput's fields

    async def update_weights_from_tensor(self, obj: Any, request: Any = None) -> tuple[bool, str]:
        from sglang.srt.utils.common import MultiprocessingSerializer

        self.auto_create_handle_loop()
        payloads = obj.serialized_named_tensors
        if len(payloads) != self.server_args.tp_size:
            return False, f"{len(payloads)} payloads for {self.server_args.tp_size} ranks"
        named = MultiprocessingSerializer.deserialize(payloads[-1])  # each rank loads its own
        self.engine.update_weights_sync(named)
        self.loaded.append([name for name, _ in named])
        if obj.flush_cache:
            self.engine.flush_cache_sync()
        return True, "Succeeded to update model weights."
