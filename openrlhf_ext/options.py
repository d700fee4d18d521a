"""The flags `latr-train` adds to OpenRLHF's, one dataclass per dotted prefix (`--rollout.backend`, ...).

They travel to every Ray worker inside OpenRLHF's args (`args.latr_ext`, a plain dict), so the engine
factory and the sample-generator extension read the same resolved values the driver printed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from latr_sglang.config import help_text


@dataclass
class RolloutOptions:
    backend: Literal["sglang", "torch", "vllm"] = field(
        default="sglang",
        metadata=help_text(
            "rollout engines: sglang (SGLang servers, GPUs), torch (our reference engine, CPU or GPU), "
            "or vllm "
            "(OpenRLHF's own vLLM engines, untouched; no LATR)"
        ),
    )
    sampler: Literal["latr", "stochastic"] = field(
        default="latr", metadata=help_text("latr: lookahead tree rollouts; stochastic: n independent samples")
    )


@dataclass
class SGLangOptions:
    num_engines: int | None = field(
        default=None,
        metadata=help_text("SGLang engines (default: --vllm.num_engines, which OpenRLHF sizes by)"),
    )
    tensor_parallel_size: int | None = field(
        default=None, metadata=help_text("GPUs per SGLang engine (default: --vllm.tensor_parallel_size)")
    )
    mem_fraction_static: float | None = field(
        default=None,
        metadata=help_text("SGLang --mem-fraction-static (default: --vllm.gpu_memory_utilization)"),
    )
    server_urls: str | None = field(
        default=None,
        metadata=help_text(
            "comma-separated URLs of running SGLang servers/routers, one per engine (no launch)"
        ),
    )
    extra_server_args: str = field(
        default="", metadata=help_text("more sglang.launch_server flags, as one shell-quoted string")
    )
    launch_timeout_s: float = field(
        default=900.0, metadata=help_text("seconds to wait for a server's /health")
    )


@dataclass
class DAPOOptions:
    dynamic_filtering_rule: Literal["std", "mean_range"] = field(
        default="std",
        metadata=help_text(
            "with --algo.dynamic_filtering_enable: std = DAPO's rule (keep groups whose scores are not all "
            "equal); mean_range = OpenRLHF's (mean score inside --algo.dynamic_filtering_range)"
        ),
    )
    dynamic_filtering_metric: Literal["score", "reward"] = field(
        default="score",
        metadata=help_text(
            "what dynamic sampling looks at: score = the reward function's accuracy (DAPO, OpenRLHF), "
            "reward = the shaped reward the advantages use"
        ),
    )
    max_sampling_rounds: int = field(
        default=3,
        metadata=help_text(
            "over-sampling bound: a step draws at most this many times its prompt batch while filling it "
            "with informative groups (OpenRLHF's own loop is unbounded)"
        ),
    )
    overlong_filtering: bool = field(
        default=False,
        metadata=help_text(
            "mask truncated samples out of the loss (DAPO); they still count in group stats. Ray mode: off "
            "unless given (the DAPO scripts give it); local mode: on for DAPO unless given false"
        ),
    )


@dataclass
class TrainerOptions:
    mode: Literal["ray", "local"] = field(
        default="ray",
        metadata=help_text("ray: OpenRLHF's distributed trainer; local: one process (CPU or one GPU)"),
    )
    max_steps: int | None = field(
        default=None,
        metadata=help_text("local mode: training steps (default 10); ray mode sizes by the dataset"),
    )
    device: str | None = field(
        default=None,
        metadata=help_text(
            "where training runs. ray mode: cpu runs OpenRLHF's Ray trainer on a CPU-only machine (debugging "
            "and CI: gloo, DeepSpeed's CPU accelerator, torch engines; openrlhf_ext.cpu_mode), default GPUs; "
            "local mode: cpu or cuda[:N] (default cpu; --local.device is the same flag)"
        ),
    )
    reward_timeout_s: float = field(
        default=300.0,
        metadata=help_text(
            "ray mode, LATR engines: wall-clock seconds one call of the --reward.remote_url reward_func (one "
            "prompt's group) may take; past it the group scores 0, with a warning and the "
            "latr/reward_timeout metric"
        ),
    )


EXTENSION_GROUPS: dict[str, type] = {
    "rollout.": RolloutOptions,
    "sglang.": SGLangOptions,
    "dapo.": DAPOOptions,
    "trainer.": TrainerOptions,
}


def as_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
