"""`latr-sglang serve`: the torch engine behind SGLang's native HTTP API.

Endpoints: POST /generate (single or batch; text or input_ids), GET /get_model_info, GET /get_server_info,
GET|POST /flush_cache, GET /health, GET /health_generate, POST /update_weights_from_disk, and SGLang's
distributed weight update: POST /init_weights_update_group then /update_weights_from_distributed (the trainer
broadcasts each named tensor from rank 0; gloo here, where SGLang uses NCCL). Bad requests get a 400 whose
message names the field; the server keeps serving. Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from latr_sglang import __version__
from latr_sglang.engines.base import GenerateRequest, RequestError, SamplingParams
from latr_sglang.engines.torch_engine import TorchEngine
from latr_sglang.engines.weight_sync import WeightSyncGroup
from latr_sglang.engines.wire import output_to_sglang, sampling_params_from_sglang

logger = logging.getLogger(__name__)

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
}
_rid_counter = itertools.count()


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


def parse_generate_body(body: Any, engine: TorchEngine) -> tuple[list[GenerateRequest], list[dict], bool]:
    """A /generate JSON body as engine requests, per-item response options, and whether it was a batch."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for key, value in body.items():
        if key not in _HANDLED and value not in (None, False, [], {}):
            raise RequestError(f"field {key!r} is not supported by this server")
    if body.get("stream"):
        raise RequestError("stream=true is not supported by this server; send stream=false")
    has_text, has_ids = body.get("text") is not None, body.get("input_ids") is not None
    if has_text == has_ids:
        raise RequestError("exactly one of 'text' and 'input_ids' must be given")
    if has_text:
        text = body["text"]
        batched = isinstance(text, list)
        texts = text if batched else [text]
        if not all(isinstance(t, str) for t in texts):
            raise RequestError("text must be a string or a list of strings")
        if engine.tokenizer is None:
            raise RequestError("this server has no tokenizer: send input_ids")
        id_lists = [engine.tokenizer(t).input_ids for t in texts]
    else:
        ids = body["input_ids"]
        if not isinstance(ids, list):
            raise RequestError("input_ids must be a list of token ids or a list of such lists")
        batched = bool(ids) and isinstance(ids[0], list)
        id_lists = ids if batched else [ids]
    n = len(id_lists)
    if n == 0:
        raise RequestError("the batch is empty")
    sampling = _per_item(body, "sampling_params", n, {}, batched)
    return_logprob = _per_item(body, "return_logprob", n, False, batched)
    start_len = _per_item(body, "logprob_start_len", n, -1, batched)
    top_num = _per_item(body, "top_logprobs_num", n, 0, batched)
    text_in_lp = bool(body.get("return_text_in_logprobs", False))
    requests, options = [], []
    for i, ids in enumerate(id_lists):
        if not isinstance(ids, list):
            raise RequestError(f"input_ids[{i}] must be a list of token ids")
        sp, text_opts = sampling_params_from_sglang(sampling[i])
        want_lp = bool(return_logprob[i])
        req = GenerateRequest(
            input_ids=tuple(ids),
            sampling=sp,
            top_logprobs_num=int(top_num[i] or 0) if want_lp else 0,
            logprob_start_len=int(start_len[i]) if want_lp and start_len[i] is not None else -1,
        )
        engine.validate(req)
        requests.append(req)
        options.append(
            {"return_logprob": want_lp, "return_text_in_logprobs": text_in_lp, "text_opts": text_opts}
        )
    return requests, options, batched


async def generate_from_body(engine: TorchEngine, body: Any) -> dict | list:
    """What SGLang's /generate (and sglang.Engine.async_generate) returns for `body`. Raises RequestError."""
    requests, options, batched = parse_generate_body(body, engine)
    outputs = await engine.generate(requests)
    responses = [
        output_to_sglang(out, engine.tokenizer, rid=f"latr-{next(_rid_counter)}", **opts)
        for out, opts in zip(outputs, options)
    ]
    return responses if batched else responses[0]


def create_app(engine: TorchEngine, served_model_name: str | None = None):
    app = FastAPI(title="latr-sglang torch engine", version=__version__)
    model_path = served_model_name or engine.model_path or "unknown"

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "code": status}}, status_code=status)

    @app.post("/generate")
    async def generate(request: Request):
        try:
            body = await request.json()
        except Exception:
            return error(400, "the request body is not valid JSON")
        try:
            return JSONResponse(await generate_from_body(engine, body))
        except RequestError as e:
            return error(400, str(e))
        except (TypeError, ValueError) as e:  # malformed values the parser did not anticipate
            return error(400, f"invalid request: {e}")

    @app.get("/get_model_info")
    async def get_model_info():
        return {
            "model_path": model_path,
            "tokenizer_path": model_path,
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": "default",
        }

    @app.get("/get_server_info")
    async def get_server_info():
        return {
            "model_path": model_path,
            "version": f"latr-sglang {__version__} (torch reference engine)",
            "context_length": engine.context_length,
            "max_running_requests": engine.max_batch_size,
            "device": str(engine.model.device),
            "dtype": str(engine.model.dtype).removeprefix("torch."),
            "internal_states": [{"prefix_cache_entries": len(engine.prefix_cache), **engine.stats}],
        }

    @app.api_route("/flush_cache", methods=["GET", "POST"])
    async def flush_cache():
        await engine.flush_cache()
        return PlainTextResponse("Cache flushed.\n")

    @app.get("/health")
    async def health():
        return PlainTextResponse("")

    @app.get("/health_generate")
    async def health_generate():
        await engine.generate([GenerateRequest((0,), SamplingParams(max_new_tokens=1, temperature=0.0))])
        return PlainTextResponse("")

    @app.post("/update_weights_from_disk")
    async def update_weights_from_disk(request: Request):
        body = await request.json()
        path = body.get("model_path") if isinstance(body, dict) else None
        if not isinstance(path, str):
            return error(400, "model_path (a local folder with *.safetensors) is required")
        try:
            n = await asyncio.to_thread(engine.load_weights_from_disk, path)
        except (FileNotFoundError, KeyError, ValueError) as e:
            return JSONResponse({"success": False, "message": str(e)}, status_code=400)
        return {"success": True, "message": f"updated {n} tensors from {path}"}

    weight_groups: dict[str, Any] = {}

    @app.post("/init_weights_update_group")
    async def init_weights_update_group(request: Request):
        body = await request.json()
        try:
            name = body.get("group_name", "weight_update_group")
            backend = body.get("backend", "gloo")
            if backend == "nccl" and not torch.cuda.is_available():
                backend = "gloo"  # the torch engine on a CPU: same protocol, CPU collectives
            weight_groups[name] = await asyncio.to_thread(
                WeightSyncGroup,
                str(body["master_address"]),
                int(body["master_port"]),
                int(body["rank_offset"]),
                int(body["world_size"]),
                backend,
                name,
            )
        except (KeyError, TypeError, ValueError) as e:
            return JSONResponse({"success": False, "message": f"invalid request: {e!r}"}, status_code=400)
        return {"success": True, "message": f"joined weight update group {name!r}"}

    @app.post("/update_weights_from_distributed")
    async def update_weights_from_distributed(request: Request):
        body = await request.json()
        group = weight_groups.get(body.get("group_name", "weight_update_group"))
        if group is None:
            return error(400, f"group_name={body.get('group_name')!r}: call /init_weights_update_group first")
        try:
            names, dtypes, shapes = body["names"], body["dtypes"], body["shapes"]
            if not len(names) == len(dtypes) == len(shapes):
                lengths = (len(names), len(dtypes), len(shapes))
                raise ValueError(f"names, dtypes, shapes differ in length: {lengths}")
            tensors = {
                name: torch.empty([int(x) for x in shape], dtype=getattr(torch, dtype))
                for name, dtype, shape in zip(names, dtypes, shapes)
            }
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            return error(400, f"invalid request: {e!r}")

        def receive() -> None:
            for tensor in tensors.values():  # the trainer broadcasts in `names` order
                group.broadcast(tensor, 0)

        await asyncio.to_thread(receive)
        try:
            await engine.update_weights(tensors)
        except (KeyError, ValueError) as e:
            return JSONResponse({"success": False, "message": str(e)}, status_code=400)
        if body.get("flush_cache", True):
            await engine.flush_cache()
        return {"success": True, "message": f"updated {len(tensors)} tensors"}

    return app


class ServerThread:
    """Runs the HTTP server in a background thread (tests, notebooks, the frontend helpers)."""

    def __init__(self, engine: TorchEngine, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        config = uvicorn.Config(
            create_app(engine), host=host, port=port, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
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
