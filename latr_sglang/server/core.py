"""What the server's route modules share: the configuration, the state, the error type, body reading."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from latr_sglang.config import help_text
from latr_sglang.engines.base import RequestError


@dataclass
class ServerConfig:
    api_key: str | None = field(
        default=None,
        metadata=help_text(
            "require `Authorization: Bearer KEY` on every endpoint but /health (SGLang's --api-key); "
            "with a key set, key holders may also use the weight and memory endpoints"
        ),
    )
    enable_weight_updates: bool = field(
        default=False,
        metadata=help_text(
            "without --api-key: allow the weight and memory endpoints (/update_weights_*, "
            "/init_weights_update_group, /release_memory_occupation, ...) to callers on loopback only"
        ),
    )
    weight_update_masters: tuple[str, ...] = field(
        default=(),
        metadata=help_text(
            "addresses a weight-update group's master_address may name besides this machine's own "
            "(loopback and its other interfaces) and the bind address ('*': any)"
        ),
    )
    weight_update_timeout_s: float = field(
        default=30.0,
        metadata=help_text("seconds for a weight-update group to form and for each broadcast to arrive"),
    )
    max_body_mb: float = field(
        default=64.0, metadata=help_text("largest request body accepted (MiB); larger ones get a 413")
    )
    max_n: int = field(default=64, metadata=help_text("largest `n` (choices) of one OpenAI request"))
    shutdown_timeout_s: float = field(
        default=5.0,
        metadata=help_text("on SIGTERM, seconds in-flight requests may finish before they are cancelled"),
    )
    served_model_name: str | None = field(
        default=None, metadata=help_text("model name in /v1/models and responses (default: the model path)")
    )
    host: str = field(default="127.0.0.1", metadata=help_text("the bind address (weight masters check it)"))
    stream_interval: int = field(
        default=1,
        metadata=help_text(
            "a streamed request's events: the first token at once, then every this many tokens (SGLang's "
            "--stream-interval; a request's sampling_params.stream_interval overrides it)"
        ),
    )
    incremental_streaming_output: bool = field(
        default=False,
        metadata=help_text(
            "stream events of /generate carry only what is new (text, output_ids, output log-probs) instead "
            "of everything so far (SGLang's --incremental-streaming-output)"
        ),
    )

    def validate(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("--api-key is empty")
        if not self.weight_update_timeout_s > 0:
            raise ValueError(f"--weight-update-timeout={self.weight_update_timeout_s}: must be > 0")
        if not self.max_body_mb > 0:
            raise ValueError(f"--max-body-mb={self.max_body_mb}: must be > 0")
        if self.max_n < 1:
            raise ValueError(f"--max-n={self.max_n}: must be >= 1")
        if not self.shutdown_timeout_s >= 0:
            raise ValueError(f"--shutdown-timeout={self.shutdown_timeout_s}: must be >= 0")
        if isinstance(self.stream_interval, bool) or not isinstance(self.stream_interval, int):
            raise ValueError(f"--stream-interval={self.stream_interval!r}: must be an integer")
        if self.stream_interval < 1:
            raise ValueError(f"--stream-interval={self.stream_interval}: must be >= 1")


class HTTPError(Exception):
    """An error answered as JSON: {"error": {"message", "type", "param", "code"}} (plus SGLang's
    {"success": false, "message"} on the weight and memory endpoints)."""

    def __init__(self, status: int, message: str, param: str | None = None, control: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.control = status, message, param, control


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "method_not_allowed",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "service_unavailable",
}


def error_body(status: int, message: str, param: str | None = None, control: bool = False) -> dict:
    body: dict[str, Any] = {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "server_error"),
            "param": param,
            "code": status,
        }
    }
    if control:
        body.update(success=False, message=message)
    return body


def error_response(
    status: int, message: str, param: str | None = None, control: bool = False
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(status, message, param, control), status_code=status, headers=headers)


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass
class Metrics:
    """Counters behind /metrics; touched only on the event loop thread."""

    http_requests: dict[tuple[str, int], int] = field(default_factory=dict)
    generate_requests: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    cached_tokens: int = 0
    aborted_requests: int = 0


class ServerState:
    """Per-app state: the engine, the config, in-flight requests (for /abort_request), executors."""

    def __init__(self, engine: Any, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config
        self.model_name = config.served_model_name or engine.model_path or "unknown"
        self.metrics = Metrics()
        self.inflight: dict[str, list[Any]] = {}  # rid -> engine request handles
        self._rids = itertools.count()
        # Tokenizing a long text takes seconds: off the event loop, and off the default executor that
        # /flush_cache and weight loads use. Tokenizers release the GIL, so /health keeps answering.
        self.tokenize_pool = ThreadPoolExecutor(2, thread_name_prefix="latr-tokenize")
        # Weight-group set-up and receives wait on other processes: one thread of their own, so that
        # however many of them hang, the rest of the server does not wait (six unreachable masters used to
        # exhaust the shared pool and stall /flush_cache).
        self.weights_pool = ThreadPoolExecutor(1, thread_name_prefix="latr-weights")
        self.weights_pending = 0
        self.weight_groups: dict[str, Any] = {}
        self.group_setups: set[str] = set()
        self.memory_released: set[str] = set()
        self.lock = threading.Lock()

    def new_rid(self) -> str:
        return f"latr-{next(self._rids)}"

    async def tokenize(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.tokenize_pool, fn, *args)

    def close(self) -> None:
        self.tokenize_pool.shutdown(wait=False, cancel_futures=True)
        self.weights_pool.shutdown(wait=False, cancel_futures=True)


def state_of(request: Request) -> ServerState:
    return request.app.state.latr


async def read_json(request: Request, *, allow_empty: bool = False, control: bool = False) -> Any:
    """The request body as JSON; a 400 naming the problem otherwise (an empty body is {} if allowed)."""
    body = await request.body()
    if not body.strip():
        if allow_empty:
            return {}
        raise HTTPError(400, "the request body is empty: send a JSON object", control=control)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:  # bad UTF-8, bad syntax, or nesting deeper than Python's stack
        raise HTTPError(400, f"the request body is not valid JSON: {e}"[:300], control=control) from None


def require_object(body: Any, known: set[str] | None = None, control: bool = False) -> dict[str, Any]:
    """A JSON object whose keys are all `known` (None: any); a 400 naming the first unknown key."""
    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object", control=control)
    if known is not None:
        for key in body:
            if key not in known:
                raise HTTPError(400, f"field {key!r} is not supported by this endpoint", key, control)
    return body


class FieldError(RequestError):
    """A RequestError that names its field for the JSON error's param (when the message cannot start with
    `field=value`, e.g. the value is a long text)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def request_error(e: RequestError, control: bool = False) -> HTTPError:
    message = str(e)
    param = getattr(e, "param", None)
    if param is None and "=" in message.split(" ", 1)[0]:
        param = message.split("=", 1)[0].split(" ", 1)[0]
    return HTTPError(400, message, param, control)
