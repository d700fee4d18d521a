"""Start-up checks of `latr-train`'s numbers, each failure one line naming the flag and its value.

Values argparse accepts but a run cannot use are refused before anything starts: a NaN gradient clip turns
every weight into NaN (and the run would exit 0 and save them), a batch size of 0 hangs, a save interval of 0
divides by zero at the first step, a learning rate above 1 destroys the weights, an integer no C long holds
fails deep inside torch or numpy, and in ray mode 0 GPUs for a role, or a --train.batch_size DeepSpeed
cannot split into micro-batches over the ranks, fail only after Ray and the actors have started.
`range_problems(inv)` is called from `conflicts()`; `unknown_flags_message` names the closest known flag for
each misspelled one.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from typing import Any

_MISSING = object()


def _flag(ns: Any, dest: str) -> Any:
    """The value of a dotted OpenRLHF dest (`actor.max_norm`) in the hierarchized namespace."""
    value = ns
    for part in dest.split("."):
        value = getattr(value, part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def model_context_length(model: str | None) -> int | None:
    """The context length a local HF folder's config.json declares, or None (a hub name, a GGUF, no file)."""
    if not model or not isinstance(model, str):
        return None
    path = os.path.join(model, "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = config.get(key) if isinstance(config, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def range_problems(inv: Any) -> list[str]:
    """Every out-of-range number in the invocation, as one line each naming the flag and the value."""
    problems: list[str] = []
    local = inv.trainer.mode == "local"
    # what the run will use: in ray mode every OpenRLHF flag (defaults included); in local mode the flags
    # written or given (the rest take LocalTrainConfig's defaults, which are checked there)
    if local:
        values = {**inv.given, **inv.explicit}

        def get(dest: str) -> Any:
            return values.get(dest, _MISSING)
    else:

        def get(dest: str) -> Any:
            return _flag(inv.openrlhf, dest)

    def check(flag: str, value: Any, ok: bool, why: str) -> None:
        if value is _MISSING or value is None or ok:
            return
        problems.append(f"--{flag} {value!r}: {why}")

    def positive_finite(dest: str, value: Any = _MISSING, why: str = "must be a finite number > 0") -> None:
        value = get(dest) if value is _MISSING else value
        x = _number(value)
        check(dest, value, x is not None and math.isfinite(x) and x > 0, why)

    def at_least(dest: str, low: int, value: Any = _MISSING, why: str | None = None) -> None:
        value = get(dest) if value is _MISSING else value
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        check(dest, value, ok, why or f"must be an integer >= {low}")

    # gradient clip: NaN, 0 or negative would silently train NaN weights or nothing
    clip_why = "must be a finite number > 0 (the gradient-norm clip; NaN or 0 would corrupt every update)"
    positive_finite("actor.max_norm", why=clip_why)
    if not local:
        positive_finite("critic.max_norm", why=clip_why)
    if "grad_clip" in inv.local_overrides:
        positive_finite("local.grad_clip", inv.local_overrides["grad_clip"], why=clip_why)
    # learning rates: 0 or negative trains nothing or backwards; above 1 every update overshoots (1e30 was
    # accepted and turned the weights into 1e30)
    lr_why = "must be a number in (0, 1] (the learning rate; above 1 the updates destroy the weights)"
    lrs = (
        ["actor.adam.lr"] if local else ["actor.adam.lr", "critic.adam.lr", "actor.muon.lr", "critic.muon.lr"]
    )
    for dest in lrs:
        value = get(dest)
        x = _number(value)
        check(dest, value, x is not None and 0 < x <= 1, lr_why)
    # seeds: OpenRLHF seeds numpy (transformers.set_seed), which takes [0, 2**32 - 1]; the local trainer
    # seeds torch, which takes a 64-bit integer
    seed = get("train.seed")
    if local:
        low, high, whose = -(2**63), 2**63 - 1, "torch takes a 64-bit seed"
    else:
        low, high, whose = 0, 2**32 - 1, "OpenRLHF seeds numpy with it"
    ok = isinstance(seed, int) and not isinstance(seed, bool) and low <= seed <= high
    check("train.seed", seed, ok, f"must be an integer in [{low}, {high}] ({whose})")
    problems.extend(_int_overflow_problems(inv, local, skip={"train.seed"}))
    # KL
    value = get("algo.kl.init_coef")
    x = _number(value)
    check(
        "algo.kl.init_coef",
        value,
        x is not None and math.isfinite(x) and x >= 0,
        "must be a finite number >= 0 (0: no KL term)",
    )
    positive_finite("algo.kl.target", why="must be a finite number > 0 (the adaptive KL target)")
    at_least("algo.kl.horizon", 1)
    # PPO clip: the ratio is clipped to [1 - low, 1 + high]
    eps_why = "must be a finite number in (0, 1) (the ratio is clipped to [1 - eps, 1 + eps])"
    value = get("actor.eps_clip")
    x = _number(value)
    check("actor.eps_clip", value, x is not None and math.isfinite(x) and 0 < x < 1, eps_why)
    value = get("actor.eps_clip_low_high")
    if value is not _MISSING and value is not None:
        pair = [_number(v) for v in value] if isinstance(value, list | tuple) else []
        ok = (
            len(pair) == 2
            and all(v is not None and math.isfinite(v) for v in pair)
            and 0 < pair[0] < 1
            and pair[1] > 0
        )
        check(
            "actor.eps_clip_low_high",
            value,
            ok,
            "needs two finite numbers, low in (0, 1) and high > 0 (the ratio is clipped to "
            "[1 - low, 1 + high])",
        )
    value = get("actor.dual_clip")
    x = _number(value)
    check(
        "actor.dual_clip", value, x is not None and math.isfinite(x) and x > 1, "must be a finite number > 1"
    )
    if not local:
        positive_finite("critic.value_clip")
    # intervals: -1 is OpenRLHF's "never"; 0 would divide by zero at the first step
    for dest in ("ckpt.save_steps", "eval.steps"):
        value = get(dest)
        ok = isinstance(value, int) and not isinstance(value, bool) and (value == -1 or value >= 1)
        check(dest, value, ok, "must be an integer >= 1, or -1 for never")
    # batch sizes and counts: 0 hangs the rollout or the update loop
    for dest in (
        "rollout.batch_size",
        "rollout.micro_batch_size",
        "rollout.n_samples_per_prompt",
        "rollout.vllm_generate_batch_size",
        "train.batch_size",
        "train.micro_batch_size",
        "train.max_epochs",
        "eval.n_samples_per_prompt",
        "data.max_len",
    ):
        at_least(dest, 1)
    for name in ("steps", "prompts_per_step", "n_samples_per_prompt", "micro_batch_size", "max_new_tokens"):
        if name in inv.local_overrides:
            at_least(f"local.{name}", 1, inv.local_overrides[name])
    temperature = get("rollout.temperature")
    x = _number(temperature)
    check("rollout.temperature", temperature, x is not None and math.isfinite(x) and x >= 0, "must be >= 0")
    # response length vs the context
    max_new = get("rollout.max_new_tokens")
    at_least("rollout.max_new_tokens", 1, max_new)
    if isinstance(max_new, int) and max_new >= 1:
        max_len = get("data.max_len")
        if not local and isinstance(max_len, int) and max_len >= 1 and max_new >= max_len:
            problems.append(
                f"--rollout.max_new_tokens {max_new} leaves no room for the prompt in --data.max_len "
                f"{max_len} (prompt and response share it)"
            )
        model = get("actor.model_name_or_path")
        context = model_context_length(model if model is not _MISSING else None)
        if context is not None and max_new >= context:
            problems.append(
                f"--rollout.max_new_tokens {max_new} does not fit the model's context of {context} tokens "
                f"({model}/config.json) with a prompt"
            )
    if not local:
        timeout = inv.trainer.reward_timeout_s
        positive_finite("trainer.reward_timeout_s", timeout, why="must be a finite number of seconds > 0")
        problems.extend(_training_rank_problems(get))
    # LATR: m top log-probs per position are asked of the engine
    if inv.latr is not None:
        from latr_sglang.driver import check_fork_candidates

        try:  # the driver's own rule, before Ray or a model starts
            check_fork_candidates(inv.latr)
        except ValueError as e:
            problems.append(f"--latr.max_branch_per_token {inv.latr.max_branch_per_token}: {e}")
    return problems


INT64_MAX = 2**63 - 1


def _int_leaves(value: Any, name: str):
    """(dotted name, int) for every int in a hierarchized namespace, dict or list (bools excluded)."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield name, value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _int_leaves(item, name)
    elif hasattr(value, "__dict__") and not callable(value):
        for key, item in vars(value).items():
            yield from _int_leaves(item, f"{name}.{key}" if name else key)


def _int_overflow_problems(inv: Any, local: bool, skip: set[str]) -> list[str]:
    """Integers no C long holds (torch, numpy and DeepSpeed read flags into 64-bit integers; a bigger one
    fails deep inside with "Overflow when unpacking long long"), one line each naming the flag."""
    leaves: list[tuple[str, int]] = []
    if local:
        for dest, value in {**inv.given, **inv.explicit}.items():
            leaves.extend(_int_leaves(value, dest))
    else:
        leaves.extend(_int_leaves(inv.openrlhf, ""))
    for prefix in ("rollout", "sglang", "dapo", "trainer"):
        options = getattr(inv, prefix, None)
        if options is not None:
            leaves.extend(_int_leaves(options, prefix))
    for key, value in inv.local_overrides.items():
        leaves.extend(_int_leaves(value, f"local.{key}"))
    if inv.latr is not None:
        for key, value in inv.latr.to_dict().items():
            if not isinstance(value, dict):
                leaves.extend(_int_leaves(value, f"latr.{key}"))
    problems, seen = [], set()
    for dest, value in leaves:
        if dest in skip or dest in seen or -INT64_MAX - 1 <= value <= INT64_MAX:
            continue
        seen.add(dest)
        problems.append(f"--{dest} {value}: out of range (a 64-bit integer, at most {INT64_MAX})")
    return problems


def _training_rank_problems(get: Any) -> list[str]:
    """Ray mode: each training role OpenRLHF starts has num_nodes x num_gpus_per_node DeepSpeed ranks (on
    --trainer.device cpu too: openrlhf_ext.cpu_mode gives Ray that many logical GPUs), so both must be >= 1;
    the ranks form (data-parallel x --ds.ring_attn_size x --ds.tensor_parallel_size) groups; and DeepSpeed
    asserts train_batch_size = micro-batch x gradient-accumulation steps (>= 1) x data-parallel size, which
    for OpenRLHF's flags means --train.batch_size is a positive multiple of --train.micro_batch_size x the
    data-parallel size. Checked per role (the reference and reward models build DeepSpeed engines from the
    same two batch flags), and the colocations OpenRLHF asserts once its Ray cluster is up."""
    problems: list[str] = []

    def integer(dest: str) -> int | None:
        value = get(dest)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    kl = _number(get("algo.kl.init_coef"))
    roles = ["actor"]
    if kl is not None and kl > 0:
        roles.append("ref")
    if get("algo.advantage.estimator") == "gae":
        roles.append("critic")
    if not get("reward.remote_url"):
        roles.append("reward")
    worlds: dict[str, tuple[int, int]] = {}
    for role in roles:
        shape = []
        for part in ("num_nodes", "num_gpus_per_node"):
            dest = f"{role}.{part}"
            value = integer(dest)
            if value is None or value < 1:
                problems.append(
                    f"--{dest} {get(dest)!r}: must be an integer >= 1 (OpenRLHF starts num_nodes x "
                    f"num_gpus_per_node DeepSpeed ranks for the {role}; 0 starts none)"
                )
            shape.append(value)
        if all(v is not None and v >= 1 for v in shape):
            worlds[role] = (shape[0], shape[1])
    ring, tp = integer("ds.ring_attn_size"), integer("ds.tensor_parallel_size")
    tbs, micro = integer("train.batch_size"), integer("train.micro_batch_size")
    if ring is None or tp is None or ring < 1 or tp < 1:
        for dest, value in (("ds.ring_attn_size", ring), ("ds.tensor_parallel_size", tp)):
            if value is None or value < 1:
                problems.append(f"--{dest} {get(dest)!r}: must be an integer >= 1")
        return problems
    dynamic = bool(get("train.dynamic_batch_enable"))  # the trainers' DeepSpeed configs then fix micro = 1
    reported: set[int] = set()
    for role, (nodes, gpus) in worlds.items():
        world = nodes * gpus
        ranks = f"--{role}.num_nodes {nodes} x --{role}.num_gpus_per_node {gpus}"
        if world % (ring * tp):
            problems.append(
                f"{ranks} = {world} ranks: not a multiple of --ds.ring_attn_size {ring} x "
                f"--ds.tensor_parallel_size {tp}"
            )
            continue
        if tbs is None or micro is None or tbs < 1 or micro < 1 or (dynamic and role in ("actor", "critic")):
            continue
        dp = world // (ring * tp)
        unit = micro * dp
        if tbs % unit and unit not in reported:
            reported.add(unit)
            groups = f" / (ring {ring} x tp {tp})" if ring * tp > 1 else ""
            # a critic is trained only for gae, and on its own GPUs (--critic.*, 8 per node by default)
            why = " (the critic --algo.advantage.estimator gae trains)" if role == "critic" else ""
            problems.append(
                f"--train.batch_size {tbs} must be a positive multiple of --train.micro_batch_size {micro} x "
                f"{dp} data-parallel {role} ranks{why} ({ranks}{groups}) = {unit}: DeepSpeed accumulates "
                "each update from micro-batches on every rank"
            )
    colocated = bool(get("train.colocate_actor_ref")) or bool(get("train.colocate_all"))
    if colocated and "ref" in worlds and "actor" in worlds and worlds["ref"] != worlds["actor"]:
        flag = "--train.colocate_all" if get("train.colocate_all") else "--train.colocate_actor_ref"
        problems.append(
            f"{flag} puts the actor and the reference on the same GPUs: --ref.num_nodes/num_gpus_per_node "
            f"{worlds['ref'][0]} x {worlds['ref'][1]} must equal --actor.num_nodes/num_gpus_per_node "
            f"{worlds['actor'][0]} x {worlds['actor'][1]}"
        )
    engines, engine_tp = integer("vllm.num_engines"), integer("vllm.tensor_parallel_size")
    if get("train.colocate_all") and not get("train.async_enable") and engines and "actor" in worlds:
        world = worlds["actor"][0] * worlds["actor"][1]
        if engine_tp is not None and world != engines * engine_tp:
            problems.append(
                f"--train.colocate_all shares the actor's {world} GPUs with the engines: --vllm.num_engines "
                f"{engines} x --vllm.tensor_parallel_size {engine_tp} must equal --actor.num_nodes x "
                f"--actor.num_gpus_per_node = {world}"
            )
    return problems


def unknown_flags_message(known: list[str], extras: list[str]) -> str:
    """'unrecognized arguments: ...' with, for each unknown --flag, the closest known one."""
    hints = []
    for token in extras:
        if not token.startswith("--"):
            continue
        flag = token.split("=", 1)[0]
        close = suggest_flags(flag, known)
        if close:
            hints.append(f"{flag}: did you mean {' or '.join(close)}?")
    message = f"unrecognized arguments: {' '.join(extras)}"
    return f"{message} ({'; '.join(hints)})" if hints else message


def suggest_flags(flag: str, known: list[str]) -> list[str]:
    """Known flags close to `flag`: OpenRLHF's dotted form of an old flat flag (`--max_norm` ->
    `--actor.max_norm`), a dash/underscore variant, or a near spelling."""
    longs = [k for k in known if k.startswith("--")]
    name = flag[2:].replace("-", "_")
    tails = sorted(k for k in longs if k[2:].replace("-", "_").rsplit(".", 1)[-1] == name)
    if tails and "." not in name:
        return tails[:3]
    by_form = {k[2:].replace("-", "_"): k for k in longs}
    if name in by_form:
        return [by_form[name]]
    close = difflib.get_close_matches(name, list(by_form), n=2, cutoff=0.75)
    return [by_form[c] for c in close]
