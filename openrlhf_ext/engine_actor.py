"""A rollout engine actor with the method surface of OpenRLHF's `RolloutRayActor`, running LATR per group.

OpenRLHF asks an engine actor for `generate_responses(prompt, label, sampling_params, max_length, tokenizer,
num_samples=n)`: one prompt, the whole group at once, which is what LATR needs. This actor samples the group
with the LATR driver (or plainly, eta = 0) on its engine (the torch engine in process, or an SGLang server
over HTTP), scores it with the `--reward.remote_url` file, and returns OpenRLHF's response dicts. Weights
arrive by the trainer's protocol: `init_process_group`, then `update_weight(name, dtype, shape)` per tensor (a
broadcast from rank 0). Tree metadata travels in each response's `extra_logs`.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import torch

from latr_sglang.config import LATRConfig
from latr_sglang.driver import LATRSampler
from latr_sglang.engines.base import SamplingParams


def sampling_from_openrlhf(params: Any, max_new_tokens: int) -> SamplingParams:
    """Our SamplingParams from the attributes of the vLLM SamplingParams object OpenRLHF passes."""
    top_k = getattr(params, "top_k", -1)
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=float(getattr(params, "temperature", 1.0)),
        top_p=float(getattr(params, "top_p", 1.0)),
        top_k=-1 if top_k in (None, 0, -1) else int(top_k),
        min_p=float(getattr(params, "min_p", 0.0) or 0.0),
        stop_token_ids=tuple(getattr(params, "stop_token_ids", None) or ()),
        ignore_eos=bool(getattr(params, "ignore_eos", False)),
    )


class LATRRolloutActor:
    def __init__(
        self,
        model_path: str,
        backend: str = "torch",
        latr: dict | None = None,
        sampler: str = "latr",
        remote_rm_url: str | None = None,
        sglang_url: str | None = None,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> None:
        if sampler not in ("latr", "stochastic"):
            raise ValueError(f"sampler={sampler!r}: expected 'latr' or 'stochastic'")
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        if backend == "torch":
            from latr_sglang.engines.torch_engine import TorchEngine

            self.engine = TorchEngine.from_pretrained(model_path, seed=seed, **engine_kwargs)
            eos_ids = self.engine.eos_ids
        elif backend == "sglang":
            from latr_sglang.engines.sglang_http import SGLangHTTPEngine

            if not sglang_url:
                raise ValueError(
                    "backend='sglang' needs sglang_url (a server or router started for this actor)"
                )
            self.engine = SGLangHTTPEngine(sglang_url)
            eos_ids = {self.tokenizer.eos_token_id} - {None}
        else:
            raise ValueError(f"backend={backend!r}: expected 'torch' or 'sglang'")
        self.backend = backend
        self.eos_ids = frozenset(eos_ids)
        self.latr = LATRConfig.from_dict(latr or {"preset": "countdown"})
        self.sampler_kind = sampler
        self.reward_func = None
        if remote_rm_url:
            spec = importlib.util.spec_from_file_location("reward_func", remote_rm_url)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self.reward_func = module.reward_func
        self.training_step = 1
        self._group = None
        self._seed = seed
        self._calls = 0

    def set_training_step(self, step: int) -> None:
        """The mix-ratio schedule is keyed by training step."""
        self.training_step = step

    async def generate_responses(
        self,
        prompt: str,
        label: Any,
        sampling_params: Any,
        max_length: int,
        hf_tokenizer: Any = None,
        num_samples: int = 1,
        images: Any = None,
    ) -> list[dict]:
        tok = hf_tokenizer or self.tokenizer
        prompt_ids = tok(text=prompt, add_special_tokens=False)["input_ids"]
        max_tokens = getattr(sampling_params, "max_tokens", None) or max(1, max_length - len(prompt_ids))
        sampling = sampling_from_openrlhf(sampling_params, max_tokens)
        sampler = LATRSampler(self.engine, self.latr, sampling, self.eos_ids, lambda t: tok.decode([t]))
        eta = 0.0 if self.sampler_kind == "stochastic" else None
        self._calls += 1
        group = (
            await sampler.sample(
                [prompt_ids],
                num_samples,
                step=self.training_step,
                eta=eta,
                seed=self._seed * 1_000_003 + self._calls,
            )
        )[0]
        outputs = []
        for traj in group.trajectories:
            observation = list(prompt_ids) + traj.token_ids
            out = {
                "prompt": prompt,
                "label": label,
                "images": images,
                "mm_train_inputs": None,
                "observation_tokens": observation,
                "action_ranges": [(len(prompt_ids), len(observation))],
                "rollout_log_probs": [0.0] * len(prompt_ids) + list(traj.logprobs),
                "truncated": traj.truncated,
                "reward": None,
                "scores": None,
                "extra_logs": {
                    "latr_origin_tree": float(traj.origin == "tree"),
                    "latr_shared_prefix_len": float(traj.shared_prefix_len),
                    "latr_branches_created": float(max(len(group.branches) - 1, 0)),
                    "latr_branches_pruned": float(sum(b.pruned_at is not None for b in group.branches)),
                },
            }
            if self.reward_func is not None:
                query = tok.decode(observation, skip_special_tokens=False)
                info = await asyncio.to_thread(self.reward_func, [query], [prompt], [label])
                out["reward"] = info["rewards"][0] if info.get("rewards") is not None else None
                scores = info.get("scores")
                out["scores"] = scores[0] if scores is not None else out["reward"]
                for key, value in (info.get("extra_logs") or {}).items():
                    out["extra_logs"][key] = value[0] if hasattr(value, "__getitem__") else value
            outputs.append(out)
        return outputs

    # ---- weight sync ------------------------------------------------------------------------------------
    async def init_process_group(
        self,
        master_address: str,
        master_port: int,
        rank_offset: int,
        world_size: int,
        group_name: str,
        backend: str = "gloo",
        use_ray: bool = False,
    ) -> None:
        if use_ray:
            raise NotImplementedError("use_ray weight sync is not supported; use the stateless group")
        if self.backend != "torch":
            raise NotImplementedError("SGLang engines sync through /init_weights_update_group (GPU path)")
        from openrlhf_ext.weight_sync import WeightSyncGroup

        self._group = await asyncio.to_thread(
            WeightSyncGroup, master_address, master_port, rank_offset, world_size, backend
        )

    async def update_weight(
        self, name: str, dtype: torch.dtype, shape: tuple, empty_cache: bool = False
    ) -> None:
        if self._group is None:
            raise RuntimeError("update_weight before init_process_group")
        tensor = torch.empty(shape, dtype=dtype)
        await asyncio.to_thread(self._group.broadcast, tensor, 0)
        await self.engine.update_weights({name: tensor})

    async def update_weight_cuda_ipc(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("CUDA IPC weight sync needs GPUs (colocated SGLang engines)")

    async def reset_prefix_cache(self) -> None:
        await self.engine.flush_cache()

    async def sleep(self, level: int = 1) -> None:  # nothing to release on CPU
        return None

    async def wake_up(self, tags: Any = None) -> None:
        return None

    async def pause_generation(self) -> None:
        return None

    async def resume_generation(self) -> None:
        return None
