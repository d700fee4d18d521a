"""LATR inside SGLang frontend programs: a drop-in for `s.fork(n)` + `sgl.gen(...)`.

    @sgl.function
    def solve(s, question):
        s += question
        forks = latr_fork(s, 8, LATRConfig.preset("countdown"), max_tokens=256)
        for f in forks:
            f += "\\nFinal answer: " + sgl.gen("answer", max_tokens=16)

`latr_fork` runs LATR from the state's current text against the state's backend server (a real SGLang
server or `latr-sglang serve`), then returns n forked states, each extended with one trajectory's text (also
stored as the variable `name`, with its tree metadata as that variable's meta info).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from typing import Any

from latr_sglang.config import LATRConfig
from latr_sglang.driver import GroupResult, LATRSampler
from latr_sglang.engines.base import SamplingParams
from latr_sglang.engines.sglang_http import SGLangHTTPEngine


@functools.lru_cache(maxsize=8)
def tokenizer_for_server(base_url: str):
    import requests
    from transformers import AutoTokenizer

    info = requests.get(base_url.rstrip("/") + "/get_model_info", timeout=30).json()
    return AutoTokenizer.from_pretrained(info.get("tokenizer_path") or info["model_path"])


def _run(coro):
    """Runs a coroutine to completion from synchronous code, inside or outside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
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
    """n forked program states extended with LATR trajectories (tree leaves, fills, stochastic samples)."""
    executor = s.stream_executor
    url = base_url or getattr(executor.backend, "base_url", None)
    if url is None:
        raise TypeError("latr_fork needs a RuntimeEndpoint backend (or base_url=...) to reach the server")
    tokenizer = tokenizer or tokenizer_for_server(url)
    prompt_ids = list(tokenizer(s.text()).input_ids)
    if not prompt_ids:
        raise ValueError("latr_fork: the program state is empty; add a prompt before forking")
    sampling = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
    eos = {tokenizer.eos_token_id} - {None}

    async def sample() -> GroupResult:
        engine = SGLangHTTPEngine(url)
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
