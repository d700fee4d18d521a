"""The FastAPI app: routers, middleware, error handlers, info and health routes, /metrics; ServerThread."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from latr_sglang import __version__
from latr_sglang.engines.base import GenerateRequest, RequestError, SamplingParams
from latr_sglang.server import control, generation, openai_api
from latr_sglang.server.core import (
    HTTPError,
    ServerConfig,
    ServerState,
    error_response,
    request_error,
)
from latr_sglang.server.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    CatchAllMiddleware,
    RequestLogMiddleware,
)

logger = logging.getLogger("latr_sglang.server")


ROUTERS = (generation.router, openai_api.router, control.router)


def create_app(engine: Any, config: ServerConfig | None = None, **overrides: Any) -> FastAPI:
    """The server's app over `engine`; `config` (or keyword overrides of ServerConfig's fields)."""
    if config is None:
        config = ServerConfig(**overrides)
    elif overrides:
        raise TypeError("give either config or keyword overrides, not both")
    config.validate()
    app = FastAPI(
        title="latr-sglang torch engine", version=__version__, docs_url=None, redoc_url=None, openapi_url=None
    )
    state = ServerState(engine, config)
    app.state.latr = state
    for router in ROUTERS:
        app.include_router(router)

    @app.get("/get_model_info")
    @app.get("/model_info")
    async def get_model_info():
        return {
            "model_path": state.model_name,
            "tokenizer_path": state.model_name,
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": "default",
        }

    @app.get("/get_server_info")
    @app.get("/server_info")
    async def get_server_info():
        return {
            "model_path": state.model_name,
            "version": f"latr-sglang {__version__} (torch reference engine)",
            "context_length": engine.context_length,
            "max_running_requests": engine.max_batch_size,
            "device": str(engine.model.device),
            "dtype": str(engine.model.dtype).removeprefix("torch."),
            "api_key_required": bool(config.api_key),
            "weight_updates": bool(config.api_key) or config.enable_weight_updates,
            "stream_interval": config.stream_interval,  # SGLang's server-args names
            "incremental_streaming_output": config.incremental_streaming_output,
            "internal_states": [{"prefix_cache_entries": len(engine.prefix_cache), **engine.stats}],
        }

    @app.get("/health")
    async def health():
        return PlainTextResponse("")

    @app.get("/health_generate")
    async def health_generate(request: Request):
        req = GenerateRequest((0,), SamplingParams(max_new_tokens=1, temperature=0.0))
        await generation.run_requests(state, request, [req], [None])
        return PlainTextResponse("")

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(prometheus_text(state), media_type="text/plain; version=0.0.4")

    @app.exception_handler(HTTPError)
    async def on_http_error(request: Request, e: HTTPError):
        return error_response(e.status, e.message, e.param, e.control)

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, e: RequestError):
        err = request_error(e)
        return error_response(err.status, err.message, err.param)

    @app.exception_handler(StarletteHTTPException)
    async def on_starlette_error(request: Request, e: StarletteHTTPException):
        message = {
            404: f"no route {request.url.path}",
            405: f"method {request.method} not allowed on {request.url.path}",
        }.get(e.status_code, str(e.detail))
        return error_response(e.status_code, message)

    @app.on_event("shutdown")
    async def _close() -> None:
        state.close()

    # innermost first: the body limit, the API key, the request log, errors as JSON (outermost)
    app.add_middleware(BodyLimitMiddleware, max_bytes=int(config.max_body_mb * 2**20))
    if config.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key)
    routes = [*app.routes, *(r for router in ROUTERS for r in router.routes)]
    known = frozenset(path for r in routes if (path := getattr(r, "path", None)))
    app.add_middleware(RequestLogMiddleware, state=state, known_paths=known)
    app.add_middleware(CatchAllMiddleware)
    return app


def prometheus_text(state: ServerState) -> str:
    """Prometheus exposition text, with SGLang's metric names where SGLang has one."""
    m, engine = state.metrics, state.engine
    load = engine.load() if hasattr(engine, "load") else {"running": 0, "waiting": 0}
    label = f'model_name="{state.model_name}"'
    rows = [
        ("sglang:num_requests_total", "counter", "generation requests finished", m.generate_requests),
        ("sglang:num_aborted_requests_total", "counter", "generation requests aborted", m.aborted_requests),
        ("sglang:prompt_tokens_total", "counter", "prompt tokens of finished requests", m.prompt_tokens),
        ("sglang:generation_tokens_total", "counter", "generated tokens", m.generation_tokens),
        (
            "sglang:cached_tokens_total",
            "counter",
            "prompt tokens served from the prefix cache",
            m.cached_tokens,
        ),
        (
            "sglang:cache_hit_rate",
            "gauge",
            "cached / prompt tokens so far",
            m.cached_tokens / m.prompt_tokens if m.prompt_tokens else 0.0,
        ),
        ("sglang:num_running_reqs", "gauge", "sequences decoding now", load["running"]),
        ("sglang:num_queue_reqs", "gauge", "sequences waiting for a batch slot", load["waiting"]),
        (
            "latr:inflight_http_requests",
            "gauge",
            "generation requests the server is answering",
            len(state.inflight),
        ),
        ("latr:engine_steps_total", "counter", "engine forward steps", engine.stats.get("steps", 0)),
        (
            "latr:engine_forward_seconds_total",
            "counter",
            "seconds in model forwards",
            engine.stats.get("forward_seconds", 0.0),
        ),
    ]
    lines = []
    for name, kind, doc, value in rows:
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}", f"{name}{{{label}}} {value}"]
    lines += [
        "# HELP latr:http_requests_total HTTP requests by path and status",
        "# TYPE latr:http_requests_total counter",
    ]
    for (path, status), count in sorted(m.http_requests.items()):
        lines.append(f'latr:http_requests_total{{path="{path}",code="{status}"}} {count}')
    return "\n".join(lines) + "\n"


def abort_all(state: ServerState) -> int:
    """Cancels every in-flight generation; each answers at once with finish_reason abort."""
    handles = [h for hs in list(state.inflight.values()) for h in hs]
    for handle in handles:
        handle.cancel()
    return len(handles)


def graceful_server(app: FastAPI, **uvicorn_kwargs: Any):
    """A uvicorn server whose shutdown gives in-flight requests --shutdown-timeout seconds, then aborts
    their generations so they answer (finish_reason abort) and close, instead of being cancelled mid-response
    or holding SIGTERM for minutes."""
    import asyncio

    import uvicorn

    state: ServerState = app.state.latr
    grace = state.config.shutdown_timeout_s

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            def abort() -> None:
                n = abort_all(state)
                if n:
                    logger.warning("shutting down: aborted %d in-flight generation(s)", n)

            asyncio.get_running_loop().call_later(grace, abort)
            await super().shutdown(sockets)

    # uvicorn's own cut-off comes later, for what the abort did not end
    config = uvicorn.Config(app, timeout_graceful_shutdown=grace + 3.0, **uvicorn_kwargs)
    return _Server(config)


class ServerThread:
    """Runs the HTTP server in a background thread (tests, notebooks, the frontend helpers)."""

    def __init__(self, engine: Any, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        cfg = ServerConfig(host=host, **config)
        self._server = graceful_server(
            create_app(engine, cfg),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # the caller's address decides the loopback check: no forwarded headers
        )
        self._thread = threading.Thread(target=self._server.run, name="latr-http", daemon=True)
        self.host = host
        self.port = port

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
