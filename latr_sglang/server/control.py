"""Weight and memory routes in SGLang's shapes: /update_weights_from_disk, /init_weights_update_group,
/destroy_weights_update_group, /update_weights_from_distributed, /update_weights_from_tensor,
/release_memory_occupation, /resume_memory_occupation; and /flush_cache.

They change what the server serves, so they are refused unless the server has an API key (and the caller
sent it) or was started with --enable-weight-updates and the caller is on loopback. A weight-update group is
checked before anything is opened: the server joins at rank_offset >= 1 (rank 0, the trainer, hosts the
store, so the server never listens), world_size >= 2, a master address on the allowed interfaces; set-up and
receives run on a thread of their own with short timeouts, and tensors are written only once all arrived.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from pathlib import Path
from typing import Any

import torch
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from latr_sglang.engines.base import RequestError
from latr_sglang.engines.weight_sync import FLATTENED_BUCKET, receive_flattened_bucket
from latr_sglang.engines.wire import TENSOR_LOAD_FORMATS, check_bool, check_int, decode_named_tensors
from latr_sglang.server.core import HTTPError, ServerState, is_loopback, read_json, require_object, state_of

router = APIRouter()

_GROUP_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_DTYPES = {"float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"}
_MEMORY_TAGS = ("weights", "kv_cache")
_MAX_PENDING_WEIGHT_OPS = 8
_MAX_WORLD_SIZE = 4096


def _gate(request: Request) -> ServerState:
    """The control-endpoint check (the API key, when set, was checked by the middleware already)."""
    state = state_of(request)
    if state.config.api_key:
        return state
    client = request.client.host if request.client else None
    if state.config.enable_weight_updates and is_loopback(client):
        return state
    if state.config.enable_weight_updates:
        why = f"the caller {client} is not on loopback; set --api-key to allow remote callers"
    else:
        why = "start the server with --api-key, or with --enable-weight-updates (loopback callers only)"
    raise HTTPError(403, f"{request.url.path} is disabled: {why}", control=True)


def _field(body: dict[str, Any], name: str, check, *args: Any, default: Any = ...) -> Any:
    if name not in body or body[name] is None:
        if default is ...:
            raise HTTPError(400, f"{name} is required", name, control=True)
        return default
    try:
        return check(name, body[name], *args)
    except RequestError as e:
        raise HTTPError(400, str(e), name, control=True) from None


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise RequestError(f"{name}={value!r}: must be a non-empty string")
    return value


async def _on_weights_thread(state: ServerState, fn, *args: Any) -> Any:
    """Runs `fn` on the weights thread; refuses when too many weight operations already wait for it."""
    if state.weights_pending >= _MAX_PENDING_WEIGHT_OPS:
        raise HTTPError(429, "too many weight operations are queued; retry later", control=True)
    state.weights_pending += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(state.weights_pool, fn, *args)
    finally:
        state.weights_pending -= 1


def _ok(message: str, **extra: Any) -> dict[str, Any]:
    return {"success": True, "message": message, **extra}


@router.api_route("/flush_cache", methods=["GET", "POST"])
async def flush_cache(request: Request):
    # Open to every caller (with the key, if one is set): it changes no output, only what is cached.
    await state_of(request).engine.flush_cache()
    return PlainTextResponse("Cache flushed.\n")


# ---- weights from a folder --------------------------------------------------------------------------------
_DISK_FIELDS = {
    "model_path",
    "load_format",
    "abort_all_requests",
    "weight_version",
    "is_async",
    "torch_empty_cache",
    "keep_pause",
    "recapture_cuda_graph",
    "token_step",
    "flush_cache",
    "manifest",
}


def _load_folder(engine: Any, path: str) -> dict[str, torch.Tensor]:
    """All tensors of the *.safetensors files in `path`, checked against the model before any is written."""
    from safetensors.torch import load_file

    folder = Path(path)
    if not folder.is_dir():
        raise RequestError(f"model_path={path!r}: no such folder (one with *.safetensors files)")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise RequestError(f"model_path={path!r}: no *.safetensors files in it")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as e:  # safetensors' own error type for a truncated or corrupt file
            raise RequestError(
                f"model_path={path!r}: {f.name} is not a valid safetensors file ({e})"
            ) from None
    _check_tensors(engine, state, "model_path")
    return state


def _check_tensors(engine: Any, tensors: dict[str, Any], field: str) -> None:
    params = engine.hf_model.state_dict()
    for name, tensor in tensors.items():
        if name not in params:
            raise RequestError(f"{field}: the model has no parameter named {name!r}")
        if tuple(tensor.shape) != tuple(params[name].shape):
            raise RequestError(
                f"{field}: {name!r} has shape {list(tensor.shape)}, "
                f"the model expects {list(params[name].shape)}"
            )
        if tensor.dtype.is_floating_point != params[name].dtype.is_floating_point:
            raise RequestError(
                f"{field}: {name!r} has dtype {tensor.dtype}, the model has {params[name].dtype}"
            )
    _check_finite(tensors, field)


def _check_finite(tensors: dict[str, torch.Tensor], field: str) -> None:
    """A diverged trainer sends NaN/inf: generation would go on with garbage (or answer a 500 for the
    log-probs JSON cannot hold), so refuse the whole update before any tensor is written."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise RequestError(f"{field}: {name!r} contains NaN/inf; no weight was written")


async def _apply(state: ServerState, tensors: dict[str, torch.Tensor], flush: bool) -> None:
    try:
        await state.engine.update_weights(tensors)  # clears the prefix cache itself
    except (KeyError, ValueError) as e:  # the engine's own checks (all run before it writes anything)
        raise HTTPError(400, str(e).strip("'\""), control=True) from None
    if flush:
        await state.engine.flush_cache()


@router.post("/update_weights_from_disk")
async def update_weights_from_disk(request: Request):
    state = _gate(request)
    body = require_object(await read_json(request, control=True), _DISK_FIELDS, control=True)
    path = _field(body, "model_path", _check_str)
    flush = _field(body, "flush_cache", check_bool, default=True)
    try:
        tensors = await _on_weights_thread(state, _load_folder, state.engine, path)
    except RequestError as e:
        raise HTTPError(400, str(e), "model_path", control=True) from None
    await _apply(state, tensors, flush)
    return _ok(f"updated {len(tensors)} tensors from {path}", num_paused_requests=0)


# ---- weights from serialized tensors in the body ----------------------------------------------------------
_TENSOR_FIELDS = {
    "serialized_named_tensors",
    "load_format",
    "flush_cache",
    "abort_all_requests",
    "weight_version",
    "selector",
    "torch_empty_cache",
}


@router.post("/update_weights_from_tensor")
async def update_weights_from_tensor(request: Request):
    """SGLang's UpdateWeightsFromTensorReqInput, with safetensors bytes (base64) per entry: SGLang's own
    entries are pickles, which a server must not load from the network. Build one with
    latr_sglang.engines.wire.encode_named_tensors."""
    state = _gate(request)
    body = require_object(await read_json(request, control=True), _TENSOR_FIELDS, control=True)
    entries = body.get("serialized_named_tensors")
    if not isinstance(entries, list) or not entries:
        raise HTTPError(
            400,
            "serialized_named_tensors must be a non-empty list of base64 strings",
            "serialized_named_tensors",
            control=True,
        )
    fmt = body.get("load_format")
    if fmt not in TENSOR_LOAD_FORMATS:
        raise HTTPError(
            400,
            f"load_format={fmt!r}: this server takes safetensors payloads (null or "
            "'safetensors'), not pickled tensors",
            "load_format",
            control=True,
        )
    flush = _field(body, "flush_cache", check_bool, default=True)

    def decode() -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for i, entry in enumerate(entries):
            tensors.update(decode_named_tensors(entry, i))
        if not tensors:
            raise RequestError("serialized_named_tensors: the payloads hold no tensors")
        _check_tensors(state.engine, tensors, "serialized_named_tensors")
        return tensors

    try:
        tensors = await _on_weights_thread(state, decode)
    except RequestError as e:
        raise HTTPError(400, str(e), "serialized_named_tensors", control=True) from None
    await _apply(state, tensors, flush)
    return _ok(f"updated {len(tensors)} tensors")


# ---- SGLang's distributed weight update -------------------------------------------------------------------
def _is_this_machines_address(ip: str) -> bool:
    """Whether `ip` is one of this machine's own interface addresses: a socket can bind to it. A trainer on
    the same machine names one (Ray's node IP, e.g. OpenRLHF's master_address), as trusted as loopback."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((ip, 0))
    except OSError:
        return False
    return True


def _allowed_master(state: ServerState, address: str) -> None:
    """The master must be on an allowed interface: this machine's (loopback or another of its addresses),
    the server's bind address, or a listed one."""
    allowed = state.config.weight_update_masters
    if "*" in allowed or address in allowed:
        return
    try:
        infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise RequestError(f"master_address={address!r}: cannot be resolved ({e})") from None
    resolved = {info[4][0] for info in infos}
    host = state.config.host
    bind = set() if host in ("0.0.0.0", "::", "") else {host}
    for ip in resolved:
        if ipaddress.ip_address(ip).is_loopback or ip in bind or ip in allowed:
            continue
        if not _is_this_machines_address(ip):
            raise RequestError(
                f"master_address={address!r} ({ip}) is not an allowed interface: this machine's, the bind "
                "address, or one given with --weight-update-masters"
            )


_GROUP_FIELDS = {"master_address", "master_port", "rank_offset", "world_size", "group_name", "backend"}


@router.post("/init_weights_update_group")
async def init_weights_update_group(request: Request):
    from latr_sglang.engines.weight_sync import WeightSyncGroup

    state = _gate(request)
    body = require_object(await read_json(request, control=True), _GROUP_FIELDS, control=True)
    address = _field(body, "master_address", _check_str)
    port = _field(body, "master_port", check_int, 1, 65535)
    rank = _field(body, "rank_offset", check_int, 1, _MAX_WORLD_SIZE - 1)
    world = _field(body, "world_size", check_int, 2, _MAX_WORLD_SIZE)
    if rank >= world:
        raise HTTPError(400, f"rank_offset={rank} must be < world_size={world}", "rank_offset", control=True)
    name = _field(body, "group_name", _check_str, default="weight_update_group")
    if not _GROUP_NAME.match(name):
        raise HTTPError(
            400,
            f"group_name={name!r}: letters, digits, '_', '.', '-' (at most 128)",
            "group_name",
            control=True,
        )
    backend = _field(body, "backend", _check_str, default="nccl")
    if backend not in ("nccl", "gloo"):
        raise HTTPError(400, f"backend={backend!r}: expected 'nccl' or 'gloo'", "backend", control=True)
    if backend == "nccl" and not torch.cuda.is_available():
        backend = "gloo"  # the torch engine on a CPU: same protocol, CPU collectives
    if name in state.weight_groups or name in state.group_setups:
        raise HTTPError(
            409,
            f"group_name={name!r} exists or is being set up: destroy it first",
            "group_name",
            control=True,
        )
    if state.group_setups:
        raise HTTPError(
            409,
            f"a weight update group ({sorted(state.group_setups)[0]!r}) is being set up; "
            "retry when it is done",
            control=True,
        )
    timeout = state.config.weight_update_timeout_s

    def setup() -> Any:
        _allowed_master(state, address)
        return WeightSyncGroup(address, port, rank, world, backend, name, timeout_s=timeout)

    state.group_setups.add(name)
    try:
        state.weight_groups[name] = await _on_weights_thread(state, setup)
    except RequestError as e:
        raise HTTPError(400, str(e), "master_address", control=True) from None
    except (RuntimeError, OSError, ValueError) as e:  # the rendezvous failed or timed out (DistStoreError)
        message = f"could not join {name!r} at {address}:{port} within {timeout:g}s: {e}".splitlines()[0]
        raise HTTPError(400, message[:500], control=True) from None
    finally:
        state.group_setups.discard(name)
    return _ok(f"joined weight update group {name!r} at rank {rank} of {world}")


@router.post("/destroy_weights_update_group")
async def destroy_weights_update_group(request: Request):
    state = _gate(request)
    body = require_object(
        await read_json(request, allow_empty=True, control=True), {"group_name"}, control=True
    )
    name = _field(body, "group_name", _check_str, default="weight_update_group")
    if state.weight_groups.pop(name, None) is None:
        raise HTTPError(400, f"group_name={name!r}: no such group", "group_name", control=True)
    return _ok(f"left weight update group {name!r}")


_DIST_FIELDS = {
    "names",
    "dtypes",
    "shapes",
    "group_name",
    "flush_cache",
    "abort_all_requests",
    "weight_version",
    "load_format",
    "selector",
    "torch_empty_cache",
}


def _receive_plan(engine: Any, body: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Empty tensors to receive into, one per announced name; each must be a model parameter of that shape
    (so a request cannot make the server allocate what it likes)."""
    names, dtypes, shapes = body.get("names"), body.get("dtypes"), body.get("shapes")
    for key, value in (("names", names), ("dtypes", dtypes), ("shapes", shapes)):
        if not isinstance(value, list) or not value:
            raise RequestError(f"{key} must be a non-empty list")
    if not len(names) == len(dtypes) == len(shapes):
        raise RequestError(
            f"names, dtypes, shapes differ in length: {len(names)}, {len(dtypes)}, {len(shapes)}"
        )
    if len(set(map(str, names))) != len(names):
        raise RequestError("names repeat")
    params = engine.hf_model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for i, (name, dtype, shape) in enumerate(zip(names, dtypes, shapes)):
        if not isinstance(name, str) or name not in params:
            raise RequestError(f"names[{i}]={name!r}: the model has no such parameter")
        dtype = dtype.removeprefix("torch.") if isinstance(dtype, str) else dtype
        if dtype not in _DTYPES:
            raise RequestError(f"dtypes[{i}]={dtype!r}: expected one of {sorted(_DTYPES)}")
        if not isinstance(shape, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape
        ):
            raise RequestError(f"shapes[{i}]={shape!r}: must be a list of non-negative integers")
        if tuple(shape) != tuple(params[name].shape):
            raise RequestError(f"shapes[{i}]={shape}: {name!r} has shape {list(params[name].shape)}")
        out[name] = torch.empty(shape, dtype=getattr(torch, dtype))
    return out


@router.post("/update_weights_from_distributed")
async def update_weights_from_distributed(request: Request):
    state = _gate(request)
    body = require_object(await read_json(request, control=True), _DIST_FIELDS, control=True)
    name = _field(body, "group_name", _check_str, default="weight_update_group")
    group = state.weight_groups.get(name)
    if group is None:
        raise HTTPError(
            400, f"group_name={name!r}: call /init_weights_update_group first", "group_name", control=True
        )
    flush = _field(body, "flush_cache", check_bool, default=True)
    fmt = body.get("load_format")
    if fmt not in (None, FLATTENED_BUCKET):
        raise HTTPError(
            400,
            f"load_format={fmt!r}: expected null (one broadcast per name) or "
            f"{FLATTENED_BUCKET!r} (one uint8 broadcast of them all)",
            "load_format",
            control=True,
        )
    try:
        tensors = _receive_plan(state.engine, body)
    except RequestError as e:
        raise HTTPError(400, str(e), control=True) from None

    def receive() -> None:
        if (
            fmt == FLATTENED_BUCKET
        ):  # SGLang's FlattenedTensorBucket: all bytes in `names` order, one broadcast
            dtypes = [t.dtype for t in tensors.values()]
            shapes = [list(t.shape) for t in tensors.values()]
            views = receive_flattened_bucket(group, list(tensors), dtypes, shapes)
            tensors.update({name: view.clone() for name, view in views})
            return
        for tensor in tensors.values():  # the trainer broadcasts in `names` order
            group.broadcast(tensor, 0)

    try:
        await _on_weights_thread(state, receive)
    except ValueError as e:  # the bucket's layout does not match the announced names (alignment)
        state.weight_groups.pop(name, None)
        raise HTTPError(
            400,
            f"load_format={fmt!r}: {e}; no weight was written, the group is closed",
            "load_format",
            control=True,
        ) from None
    except (RuntimeError, OSError) as e:  # a peer left or the broadcast timed out
        state.weight_groups.pop(name, None)  # the group's collective order is lost: it cannot be reused
        message = f"receiving from group {name!r} failed, no weight was written, the group is closed: {e}"
        raise HTTPError(400, message.splitlines()[0][:500], control=True) from None
    try:  # all arrived, the group stays usable; nothing is written if one is not finite
        await _on_weights_thread(state, _check_finite, tensors, "names")
    except RequestError as e:
        raise HTTPError(400, str(e), "names", control=True) from None
    await _apply(state, tensors, flush)
    return _ok(f"updated {len(tensors)} tensors")


# ---- memory -----------------------------------------------------------------------------------------------
def _tags(body: dict[str, Any]) -> list[str]:
    tags = body.get("tags")
    if tags is None:
        return list(_MEMORY_TAGS)
    if not isinstance(tags, list) or not tags or not all(t in _MEMORY_TAGS for t in tags):
        raise HTTPError(400, f"tags={tags!r}: a non-empty list of {list(_MEMORY_TAGS)}", "tags", control=True)
    return tags


@router.api_route("/release_memory_occupation", methods=["GET", "POST"])
async def release_memory_occupation(request: Request):
    """Colocation with a trainer: drops the prefix cache (the KV memory) and, on a GPU, returns cached
    blocks to the driver. The weights stay in place (the torch engine has no CPU offload); generation is
    refused until /resume_memory_occupation, as with SGLang."""
    state = _gate(request)
    tags = _tags(
        require_object(await read_json(request, allow_empty=True, control=True), {"tags"}, control=True)
    )
    await state.engine.flush_cache()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    state.memory_released.update(tags)
    return _ok(f"released {tags}")


@router.api_route("/resume_memory_occupation", methods=["GET", "POST"])
async def resume_memory_occupation(request: Request):
    state = _gate(request)
    tags = _tags(
        require_object(await read_json(request, allow_empty=True, control=True), {"tags"}, control=True)
    )
    state.memory_released.difference_update(tags)
    return _ok(f"resumed {tags}")
