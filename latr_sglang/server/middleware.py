"""ASGI middleware of the server, outermost first: errors as JSON, the request log and metrics, the API key,
the body size limit. Plain ASGI (not BaseHTTPMiddleware), so that a route still sees its client disconnect."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from latr_sglang.server.core import HTTPError, ServerState, error_body, error_response

logger = logging.getLogger("latr_sglang.server")

# Paths open without the API key: a liveness probe must not need the secret (SGLang also opens
# /health_generate and /metrics; here those need the key, as every other path does).
OPEN_PATHS = frozenset({"/health"})


async def _send_json(send: Any, status: int, body: dict, headers: list | None = None) -> None:
    import json

    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": payload})


class CatchAllMiddleware:
    """Any exception a route did not turn into a response becomes a JSON 500 sent on the same connection.

    Starlette's own handler re-raises after answering, and uvicorn then drops the connection, so a client's
    next keep-alive request failed. Here the exception is logged and swallowed."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except HTTPError as e:  # raised by an inner middleware's receive (the body limit)
            if not started:
                await _send_json(send, e.status, error_body(e.status, e.message, e.param, e.control))
        except Exception as e:
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                message = f"internal server error: {type(e).__name__}: {e}"[:500]
                await _send_json(send, 500, error_body(500, message))


class RequestLogMiddleware:
    """One info line per request (method, path, status, tokens in/out, seconds) and the HTTP counters."""

    def __init__(self, app: Any, state: ServerState, known_paths: frozenset[str]) -> None:
        self.app, self.state, self.known_paths = app, state, known_paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        scope.setdefault("state", {})

        async def status_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, status_send)
        finally:
            path = scope["path"] if scope["path"] in self.known_paths else "other"
            key = (path, status)
            self.state.metrics.http_requests[key] = self.state.metrics.http_requests.get(key, 0) + 1
            st = scope.get("state", {})
            logger.info(
                "%s %s %d in=%d out=%d %.3fs",
                scope.get("method"),
                scope["path"],
                status,
                st.get("latr_prompt_tokens", 0),
                st.get("latr_completion_tokens", 0),
                time.perf_counter() - t0,
            )


class ApiKeyMiddleware:
    """`Authorization: Bearer KEY` on every path but /health, compared in constant time (as SGLang does)."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app, self.expected = app, api_key.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not secrets.compare_digest(token.strip(), self.expected):
            message = "missing or wrong API key: send `Authorization: Bearer <key>`"
            await error_response(401, message)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses bodies over the limit: at once from Content-Length, else while the body streams in."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request body exceeds the server's limit of {self.max_bytes} bytes (--max-body-mb)"
        length = dict(scope.get("headers") or []).get(b"content-length")
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            declared = None
        if declared is not None and declared > self.max_bytes:
            await error_response(413, message)(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPError(413, message)
            return msg

        await self.app(scope, limited_receive, send)
