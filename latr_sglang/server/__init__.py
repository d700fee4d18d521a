"""`latr-sglang serve`: the torch engine behind SGLang's HTTP API.

Native: POST /generate (single or batch, text or input_ids, stream=true as server-sent events),
/tokenize, /detokenize, /abort_request, GET /get_model_info, /get_server_info, /health, /health_generate,
/metrics (Prometheus), GET|POST /flush_cache. OpenAI-compatible: GET /v1/models, POST /v1/completions,
/v1/chat/completions (both also streaming). Weights and memory (see `control`): /update_weights_from_disk,
/update_weights_from_tensor, /init_weights_update_group + /update_weights_from_distributed (the trainer
broadcasts from rank 0; gloo here, where SGLang uses NCCL), /destroy_weights_update_group,
/release_memory_occupation, /resume_memory_occupation.

Security: binds 127.0.0.1 unless told otherwise; `--api-key` guards every path but /health; the weight and
memory endpoints answer only with a key set, or with --enable-weight-updates to loopback callers. Every error
is JSON {"error": {"message", "type", "param", "code"}} and names the field; the server keeps serving.

Modules: core (config, state, errors), middleware (API key, body limit, request log, errors), generation,
openai_api, control, app (the app and ServerThread), run (the `serve` command).
"""

from typing import Any

# Lazy, so that `latr-sglang --help` and the flag definitions (run.py) do not import torch.
_EXPORTS = {
    "ServerThread": "latr_sglang.server.app",
    "create_app": "latr_sglang.server.app",
    "prometheus_text": "latr_sglang.server.app",
    "ServerConfig": "latr_sglang.server.core",
    "generate_from_body": "latr_sglang.server.generation",
    "parse_generate_body": "latr_sglang.server.generation",
    "stream_from_body": "latr_sglang.server.generation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'latr_sglang.server' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
