"""LATR inside SGLang frontend programs: a drop-in for `s.fork(n)` + `sgl.gen(...)`.

    @sgl.function
    def solve(s, question):
        s += chat_prompt(tokenizer, question)  # chat models answer inside their template
        forks = latr_fork(s, 4, LATRConfig.preset("countdown", lookahead_steps=(8, 16)), max_tokens=64)
        s["answers"] = [f["latr"] for f in forks]  # the trajectory texts
        s["trees"] = [f.get_meta_info("latr") for f in forks]  # origin, parent, birth step, ids, log-probs

`latr_fork` runs LATR from the state's current text against the state's backend server (a real SGLang
server or `latr-sglang serve`), then returns n forked states, each extended with one trajectory's text (also
stored as the variable `name`, with its tree metadata as that variable's meta info). A complete example that
runs in about a minute on the embedded model: docs/examples/latr_fork_program.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import re
from typing import Any

from latr_sglang.config import LATRConfig
from latr_sglang.driver import GroupResult, LATRSampler, check_fork_candidates
from latr_sglang.engines.base import RequestError, SamplingParams
from latr_sglang.engines.sglang_http import SGLangHTTPEngine, auth_headers
from latr_sglang.tasks.prompts import unicode_error


class ServerError(ConnectionError):
    """The server cannot be used: unreachable, not speaking SGLang's API, or its tokenizer is not readable
    here. The message is one line that starts with the URL."""


def server_model_info(base_url: str, timeout: float = 30.0, api_key: str | None = None) -> dict[str, Any]:
    """The server's /get_model_info, or a ServerError saying in one line why it cannot be had."""
    import requests

    url = base_url.rstrip("/")
    if not re.match(r"https?://", url):
        raise ServerError(f"{base_url}: not an http(s):// URL")
    try:
        resp = requests.get(url + "/get_model_info", timeout=timeout, headers=auth_headers(api_key))
    except requests.ConnectionError:
        raise ServerError(
            f"{url}: cannot connect (is a server running there? start one with `latr-sglang serve`)"
        ) from None
    except requests.Timeout:
        raise ServerError(f"{url}: no answer within {timeout:g} s") from None
    except requests.RequestException as e:
        raise ServerError(f"{url}: {type(e).__name__}: {e}") from None
    try:
        info = resp.json()
    except ValueError:
        info = None
    if resp.status_code == 401:
        raise ServerError(
            f"{url}: /get_model_info answered HTTP 401: the server "
            + ("refused this API key" if api_key else "needs an API key (--api-key, or api_key=...)")
        )
    if resp.status_code != 200 or not isinstance(info, dict) or "model_path" not in info:
        raise ServerError(
            f"{url}: /get_model_info answered HTTP {resp.status_code} without a model_path: "
            "not an SGLang server (or it needs an API key)"
        )
    return info


@functools.lru_cache(maxsize=8)
def tokenizer_for_server(base_url: str, api_key: str | None = None):
    """The tokenizer of the model a server serves, loaded from the path the server reports (the server and
    this process must see the same files: a shared disk or the same machine)."""
    from transformers import AutoTokenizer

    info = server_model_info(base_url, api_key=api_key)
    path = info.get("tokenizer_path") or info["model_path"]
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ServerError(
            f"{base_url}: cannot load the server's tokenizer from {path!r} here ({first[:200]}); "
            "pass tokenizer=... (latr_fork) or run where that path exists"
        ) from None


def server_eos_ids(base_url: str, tokenizer: Any, api_key: str | None = None) -> set[int]:
    """End-of-sequence ids of the served model, as SGLang stops on them: the tokenizer's and its generation
    config's (chat models end a turn with a token that is not always the tokenizer's eos_token)."""
    from latr_sglang.engines.sglang_http import model_eos_ids

    try:
        path = server_model_info(base_url, api_key=api_key).get("model_path")
    except ServerError:
        path = None
    if not path:
        return {tokenizer.eos_token_id} - {None}
    return set(model_eos_ids(path, tokenizer))


def server_context_length(base_url: str, timeout: float = 30.0, api_key: str | None = None) -> int | None:
    """The context length the server reports in /get_server_info, or None where it reports none (then the
    server's own check is the only one)."""
    import requests

    try:
        resp = requests.get(
            base_url.rstrip("/") + "/get_server_info", timeout=timeout, headers=auth_headers(api_key)
        )
        value = resp.json().get("context_length") if resp.status_code == 200 else None
    except (requests.RequestException, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


MAX_FORKS = 1024


def _check_fork_args(s: Any, n: Any, config: Any, name: Any, max_tokens: Any, tokenizer: Any) -> None:
    """A one-line error naming the argument, before anything reaches the driver (where a float n or a dict
    config would fail deep inside with a TypeError or AttributeError)."""

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if getattr(s, "stream_executor", None) is None:
        raise TypeError(
            f"latr_fork: s={type(s).__name__}: must be an SGLang program state (the s of an @sgl.function)"
        )
    if not is_int(n):
        raise TypeError(f"latr_fork: n={n!r}: must be a positive integer (got {type(n).__name__})")
    if n < 1:
        raise ValueError(f"latr_fork: n={n}: must be a positive integer")
    if n > MAX_FORKS:  # each fork is a program state with its own thread in SGLang's frontend
        raise ValueError(f"latr_fork: n={n}: at most {MAX_FORKS} forks of one program state")
    if config is not None and not isinstance(config, LATRConfig):
        hint = "use LATRConfig.from_dict" if isinstance(config, dict) else "use LATRConfig.preset(name)"
        raise TypeError(f"latr_fork: config must be a LATRConfig (got {type(config).__name__}; {hint})")
    if not isinstance(name, str) or not name:
        raise TypeError(f"latr_fork: name={name!r}: must be a non-empty string (the variable to store)")
    if not is_int(max_tokens):
        raise TypeError(f"latr_fork: max_tokens={max_tokens!r}: must be a positive integer")
    if max_tokens < 1:
        raise ValueError(f"latr_fork: max_tokens={max_tokens}: must be a positive integer")
    if tokenizer is not None and not (callable(tokenizer) and callable(getattr(tokenizer, "decode", None))):
        raise TypeError(
            f"latr_fork: tokenizer={tokenizer!r}: must be a tokenizer object (e.g. "
            "AutoTokenizer.from_pretrained(...)), or None for the server's"
        )


def _check_sampling_args(sampling: SamplingParams, eta: Any, seed: Any, config: LATRConfig) -> None:
    """The sampling arguments named in one line before the server is asked anything (the engine would
    refuse them only at the first tree-phase request)."""
    try:
        sampling.validate()
    except RequestError as e:
        raise ValueError(f"latr_fork: {e}".replace("sampling_params.", "")) from None
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"latr_fork: eta={eta!r}: must be a number in [0, 1] (the tree's share of n)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"latr_fork: seed={seed!r}: must be an integer")
    try:
        config.validate()  # again: its fields may have been assigned since it was built
        check_fork_candidates(config)
    except ValueError as e:
        raise ValueError(f"latr_fork: {e}") from None


def chat_prompt(tokenizer: Any, user: str, system: str | None = None) -> str:
    """The text of a one-turn chat in the model's own template, up to where the assistant starts writing.
    Instruct models need it: on a raw prompt their most likely first token is often end-of-turn."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]
    if not getattr(tokenizer, "chat_template", None):
        return user
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _run(coro):
    """Runs a coroutine to completion from synchronous code, inside or outside a running event loop."""
    try:
        asyncio.get_running_loop()
        in_loop = True
    except RuntimeError:
        in_loop = False
    # not inside the except block: every exception kept from the run would get that RuntimeError as its
    # context, and its traceback would keep the caller's frames (and the forks' SGLang states, whose threads
    # end only when they are collected) alive until after interpreter shutdown joins those threads: a hang
    if not in_loop:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def latr_fork(
    s: Any,
    n: int,
    config: LATRConfig | None = None,
    *,
    name: str = "latr",
    max_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = -1,
    eta: float = 1.0,
    seed: int = 0,
    tokenizer: Any = None,
    base_url: str | None = None,
) -> list[Any]:
    """n forked program states extended with LATR trajectories (tree leaves, fills, stochastic samples).
    `max_tokens` must fit in the server's context after the prompt: a larger value is refused, not clamped."""
    _check_fork_args(s, n, config, name, max_tokens, tokenizer)
    sampling = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
    _check_sampling_args(sampling, eta, seed, config or LATRConfig())
    executor = s.stream_executor
    url = base_url or getattr(executor.backend, "base_url", None)
    if url is None:
        raise TypeError("latr_fork needs a RuntimeEndpoint backend (or base_url=...) to reach the server")
    api_key = getattr(executor.backend, "api_key", None)  # RuntimeEndpoint(url, api_key=...)
    tokenizer = tokenizer or tokenizer_for_server(url, api_key)
    text = s.text()
    bad_text = unicode_error(text)
    if bad_text:  # the tokenizer's own error for it is a TypeError about its input types
        raise ValueError(f"latr_fork: the program's text is {bad_text}")
    # a chat-templated text already starts with its BOS: do not add a second one
    bos = getattr(tokenizer, "bos_token", None)
    prompt_ids = list(tokenizer(text, add_special_tokens=not (bos and text.startswith(bos))).input_ids)
    if not prompt_ids:
        raise ValueError("latr_fork: the program state is empty; add a prompt before forking")
    context = server_context_length(url, api_key=api_key)
    if context is not None and len(prompt_ids) + max_tokens > context:
        # refused here: the driver would report a remainder (max_tokens minus the tree phase) the caller never
        # passed
        room = max(context - len(prompt_ids), 0)
        raise ValueError(
            f"latr_fork: max_tokens={max_tokens}: more than the server can generate after this "
            f"{len(prompt_ids)}-token prompt (context length {context}: at most {room})"
        )
    eos = server_eos_ids(url, tokenizer, api_key)

    async def sample() -> GroupResult:
        engine = SGLangHTTPEngine(url, api_key=api_key)
        try:
            sampler = LATRSampler(
                engine, config or LATRConfig(), sampling, eos, lambda t: tokenizer.decode([t])
            )
            return (await sampler.sample([prompt_ids], n, eta=eta, seed=seed))[0]
        finally:
            await engine.close()

    group = _run(sample())
    forks = s.fork(n)
    for fork, traj in zip(forks, group.trajectories):
        text = tokenizer.decode(traj.token_ids, skip_special_tokens=True)
        fork += text
        fork.stream_executor.set_var(name, text)
        fork.stream_executor.meta_info[name] = {
            "output_ids": traj.token_ids,
            "output_token_logprobs": traj.logprobs,
            "finish_reason": traj.finish_reason.value,
            "origin": traj.origin,
            "branch_id": traj.branch_id,
            "parent": traj.parent,
            "birth_step": traj.birth_step,
            "completion_tokens": len(traj.token_ids),
        }
    return forks
