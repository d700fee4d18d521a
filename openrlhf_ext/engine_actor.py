"""A rollout engine actor with the method surface of OpenRLHF's `RolloutRayActor`, running LATR per group.

OpenRLHF asks an engine actor for `generate_responses(prompt, label, sampling_params, max_length, tokenizer,
num_samples=n)`: one prompt, the whole group at once, which is what LATR needs. This actor samples the group
with the LATR driver (or plainly, eta = 0) on its engine (the torch engine in process, or an SGLang server
over HTTP, launched by the actor on its GPUs or given by URL), scores it with the `--reward.remote_url` file,
and returns OpenRLHF's response dicts. Weights arrive by the trainer's protocol: `init_process_group`, then
`update_weight(name, dtype, shape)` per tensor, a broadcast from rank 0 that the torch engine receives here
and an SGLang server receives itself (/init_weights_update_group, /update_weights_from_distributed). Tree
metadata travels in each response's `extra_logs`.

`create_rollout_engines` has the signature of OpenRLHF's `create_vllm_engines`; `latr-train` puts it in
its place.

The reward file is the user's code, run on model output: each call (one prompt's group) runs in a daemon
thread with a wall-clock bound (`--trainer.reward_timeout_s`; past it the group scores 0, with one warning,
and the thread cannot keep the process from exiting), and what it returns is checked (`reward_values`).
An exception it raises is re-raised naming the file: a bug in the reward code stops the run rather than
silently scoring 0 (OpenRLHF's own vLLM engines log such an exception at INFO level and hand on no reward).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib.util
import inspect
import logging
import math
import numbers
import os
import re
import socket
import sys
import tempfile
import threading
import zlib
from typing import Any

import torch

from latr_sglang.algorithm import mix_ratio
from latr_sglang.config import LATRConfig
from latr_sglang.driver import LATRSampler
from latr_sglang.engines.base import SamplingParams
from latr_sglang.messages import short_repr
from latr_sglang.metrics import pairwise_edit_distance, tree_stats


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


logger = logging.getLogger(__name__)

REWARD_TIMEOUT_S = 300.0  # --trainer.reward_timeout_s's default: one reward_func call (a prompt's group)
REWARD_EXAMPLE = "latr_sglang/tasks/reward_func.py"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _short(value: Any) -> str:
    """The type and a bounded repr of a value, for error messages (a 1 MB return value must not become a
    1 MB message)."""
    return f"{type(value).__name__} {short_repr(value, 160)}"


def _reward_func_binding(body: list[ast.stmt]) -> str | None:
    """How the module-level statements bind the name `reward_func` (the last binding wins): "def", "async",
    "other" (an assignment or import, checked when the file is loaded), or None. Compound statements at module
    level (if/try/with) are looked into; function and class bodies are not."""
    found = None
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == "reward_func":
            found = "def"
        elif isinstance(node, ast.AsyncFunctionDef) and node.name == "reward_func":
            found = "async"
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if "reward_func" in names and getattr(node, "value", None) is not None:
                found = "other"
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound = {a.asname or a.name.split(".")[0] for a in node.names}
            if "reward_func" in bound:
                found = "other"
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
            blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [h.body for h in getattr(node, "handlers", [])]
            for block in blocks:
                inner = _reward_func_binding(block)
                found = inner or found
    return found


def reward_file_problem(path: str) -> str | None:
    """Why `path` cannot be the LATR engines' reward file, found without running it (the CLI checks this
    before Ray starts; load_reward_func checks it again, then imports the file): not a local file, not
    Python, a syntax error, or no top-level `reward_func`. None: it may be loaded."""
    if _URL.match(path):
        return (
            f"LATR engines need a local Python file defining reward_func (e.g. {REWARD_EXAMPLE}), "
            "not an HTTP reward server"
        )
    if not os.path.exists(path):
        return "no such file"
    if os.path.isdir(path):
        return f"is a directory, not a Python file defining reward_func (e.g. {REWARD_EXAMPLE})"
    if not path.endswith(".py"):
        return f"not a .py file: LATR engines load a Python file defining reward_func (e.g. {REWARD_EXAMPLE})"
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        if e.lineno is None:  # NUL bytes: Python 3.11 reports them without a line
            return f"not Python source ({e.msg})"
        return f"SyntaxError at line {e.lineno}: {e.msg}"
    except ValueError as e:  # NUL bytes, as other Python versions report them
        return f"not Python source ({e})"
    binding = _reward_func_binding(tree.body)
    if binding is None:
        return "defines no top-level reward_func(queries, prompts, labels)"
    if binding == "async":
        return "reward_func is an async function; it must be a plain one (it runs in a worker thread)"
    missing = _missing_imports(tree.body, os.path.dirname(os.path.abspath(path)))
    if missing:
        return (
            f"imports {', '.join(missing)}, which this Python ({sys.executable}) cannot find: install it, "
            "or import it inside reward_func"
        )
    return None


def _missing_imports(body: list[ast.stmt], folder: str) -> list[str]:
    """The top-level packages that the module's unconditional, absolute imports name and that neither this
    Python nor the file's folder holds (found without importing them). Imports inside try, if or a function
    are left alone: they are often optional, with a fallback."""
    roots: list[str] = []
    for node in body:
        if isinstance(node, ast.Import):
            roots += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.append(node.module.split(".")[0])
    missing = []
    for root in dict.fromkeys(roots):
        if root in sys.builtin_module_names or root == "__future__":
            continue
        if os.path.exists(os.path.join(folder, root + ".py")) or os.path.isdir(os.path.join(folder, root)):
            continue
        try:
            found = importlib.util.find_spec(root) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(root)
    return missing


def reward_url_problem(remote_rm_url: str | list | tuple | None) -> str | None:
    """The one-line error load_reward_func would raise for this --reward.remote_url (as OpenRLHF's
    validation leaves it, a list, or a plain string), found without running the file; None when it may be
    loaded (or is not given)."""
    if not remote_rm_url:
        return None
    urls = [remote_rm_url] if isinstance(remote_rm_url, str) else list(remote_rm_url)
    if len(urls) != 1:
        return (
            f"--reward.remote_url {','.join(map(str, urls))}: LATR engines score with one reward file, "
            f"got {len(urls)}"
        )
    path = str(urls[0])
    why = reward_file_problem(path)
    return f"--reward.remote_url {path}: {why}" if why else None


def load_reward_func(remote_rm_url: str | list | tuple | None):
    """`reward_func` from the reward file OpenRLHF passes: `--reward.remote_url` reaches create_vllm_engines
    as OpenRLHF's validation leaves it, a list of URLs/paths (cli/train_ppo_ray.py splits the flag on commas);
    a plain string is accepted too. The engines score with one Python file; anything else fails naming it."""
    if not remote_rm_url:
        return None
    problem = reward_url_problem(remote_rm_url)
    if problem:
        raise ValueError(problem)
    path = str(remote_rm_url if isinstance(remote_rm_url, str) else next(iter(remote_rm_url)))
    spec = importlib.util.spec_from_file_location("reward_func", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a failed import in the user's file: its error, naming the file
        raise ValueError(f"--reward.remote_url {path}: loading it raised {type(e).__name__}: {e}") from e
    fn = getattr(module, "reward_func", None)
    if fn is None:
        raise ValueError(f"--reward.remote_url {path}: defines no reward_func(queries, prompts, labels)")
    if not callable(fn) or inspect.iscoroutinefunction(fn):
        kind = "an async function" if callable(fn) else _short(fn)
        raise ValueError(
            f"--reward.remote_url {path}: reward_func is {kind}, not a function "
            "reward_func(queries, prompts, labels)"
        )
    return fn


def _numbers(value: Any, n: int, what: str, path: str) -> list[float]:
    """`value` as n floats: a tensor/array with n elements (1-D, or one non-trivial dimension), a list or
    tuple of n numbers, or (n = 1) one number. Anything else is a ValueError naming the file and the value."""

    def bad(why: str) -> ValueError:
        return ValueError(f"--reward.remote_url {path}: reward_func's {what} {why}; got {_short(value)}")

    items: list[Any] | None = None
    if hasattr(value, "shape") and hasattr(value, "reshape") and hasattr(value, "tolist"):  # tensor, array
        shape = tuple(value.shape)
        if sum(1 for d in shape if d != 1) > 1:
            raise bad(f"must be one number per sample ({n}), not of shape {shape}")
        items = value.reshape(-1).tolist()
    elif isinstance(value, list | tuple):
        items = [v.item() if hasattr(v, "item") and getattr(v, "ndim", 1) == 0 else v for v in value]
    elif isinstance(value, numbers.Real) and n == 1:
        items = [value]
    if items is None:
        raise bad(f"must be {n} numbers (one per sample)")
    if len(items) != n:
        raise bad(f"has {len(items)} values for {n} samples")
    for item in items:
        if not isinstance(item, numbers.Real):
            raise bad(f"must be numbers, not {type(item).__name__}")
    return [float(item) for item in items]


def reward_values(
    result: Any, n: int, path: str
) -> tuple[list[float], list[float] | None, dict[str, list[float]]]:
    """(rewards, scores or None, extra_logs per sample) from what a reward_func returned for n samples.

    Accepted: a dict with "rewards" (n numbers: a tensor, an array or a list), optional "scores" (the same)
    and optional "extra_logs" (a dict of numbers, or of n numbers each); or, OpenRLHF's older convention, a
    bare 1-D tensor/list of n rewards. Anything else is a ValueError naming the file, what it returned and
    what is expected. Non-finite values are left to the caller."""
    expected = (
        "a dict with 'rewards' (one number per sample; optional 'scores' and 'extra_logs'), or a 1-D "
        f"tensor/list of {n} rewards"
    )
    if isinstance(result, dict):
        if result.get("rewards") is None:
            keys = ", ".join(repr(k) for k in list(result)[:8]) or "none"
            raise ValueError(
                f"--reward.remote_url {path}: reward_func returned a dict without 'rewards' (keys: {keys}); "
                f"expected {expected}"
            )
        rewards = _numbers(result["rewards"], n, "'rewards'", path)
        scores = None if result.get("scores") is None else _numbers(result["scores"], n, "'scores'", path)
        logs = result.get("extra_logs")
        if logs is None:
            logs = {}
        if not isinstance(logs, dict):
            raise ValueError(
                f"--reward.remote_url {path}: reward_func's 'extra_logs' must be a dict of numbers (or of "
                f"one number per sample each); got {_short(logs)}"
            )
        extra: dict[str, list[float]] = {}
        for key, value in logs.items():
            what = f"extra_logs[{key!r}]"
            if isinstance(value, numbers.Real):
                extra[str(key)] = [float(value)] * n
            elif hasattr(value, "shape") and tuple(value.shape) in ((), (1,)) and n != 1:
                extra[str(key)] = _numbers(value, 1, what, path) * n  # one number for the whole batch
            else:
                extra[str(key)] = _numbers(value, n, what, path)
        return rewards, scores, extra
    if isinstance(result, list | tuple) or (hasattr(result, "shape") and hasattr(result, "tolist")):
        return _numbers(result, n, "return value", path), None, {}
    raise ValueError(f"--reward.remote_url {path}: reward_func must return {expected}; got {_short(result)}")


def _in_daemon_thread(fn: Any, *args: Any, **kwargs: Any) -> asyncio.Future:
    """fn(*args, **kwargs) in a daemon thread, as a future of this loop. Unlike asyncio.to_thread (whose
    executor threads are joined at interpreter exit), a call that never returns cannot keep the process
    alive; it is abandoned when its caller stops waiting."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def work() -> None:
        try:
            outcome = (True, fn(*args, **kwargs))
        except Exception as e:
            outcome = (False, e)
        except BaseException as e:  # SystemExit and the like, from user code: an error of the call
            outcome = (False, RuntimeError(f"{type(e).__name__}: {e}"))
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits for this call
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name="latr-reward-func", daemon=True).start()
    return future


def _accepts_keyword(fn: Any, name: str) -> bool:
    """Whether `fn` takes keyword `name` (users' reward files may predate the `responses` keyword)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LATRRolloutActor:
    def __init__(
        self,
        model_path: str,
        backend: str = "torch",
        latr: dict | None = None,
        sampler: str = "latr",
        remote_rm_url: str | None = None,
        sglang_url: str | None = None,
        sglang_launch: dict | None = None,
        seed: int = 0,
        reward_timeout_s: float = REWARD_TIMEOUT_S,
        **engine_kwargs: Any,
    ) -> None:
        if sampler not in ("latr", "stochastic"):
            raise ValueError(f"sampler={sampler!r}: expected 'latr' or 'stochastic'")
        timeout = reward_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
            raise ValueError(f"reward_timeout_s={reward_timeout_s!r}: must be a finite number of seconds > 0")
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.server = None
        if backend == "torch":
            from latr_sglang.engines.torch_engine import TorchEngine

            self.engine = TorchEngine.from_pretrained(model_path, seed=seed, **engine_kwargs)
            eos_ids = self.engine.eos_ids
        elif backend == "sglang":
            from latr_sglang.engines.sglang_http import SGLangHTTPEngine, model_eos_ids

            if not sglang_url:
                if sglang_launch is None:
                    raise ValueError("backend='sglang' needs sglang_url (a running server) or sglang_launch")
                self.server = self._launch_sglang(model_path, seed, **sglang_launch)
                sglang_url = self.server.url
            self.engine = SGLangHTTPEngine(sglang_url)
            # SGLang stops on the generation config's EOS ids too (an instruct model's <|im_end|>)
            eos_ids = model_eos_ids(model_path, self.tokenizer)
        else:
            raise ValueError(f"backend={backend!r}: expected 'torch' or 'sglang'")
        self.backend = backend
        self.eos_ids = frozenset(eos_ids)
        self.latr = LATRConfig.from_dict(latr or {"preset": "countdown"})
        self.sampler_kind = sampler
        self.device = str(engine_kwargs.get("device", "cpu")) if backend == "torch" else "cuda"
        self.reward_func = load_reward_func(remote_rm_url)
        urls = [remote_rm_url] if isinstance(remote_rm_url, str) else list(remote_rm_url or [])
        self._reward_path = str(urls[0]) if urls else None
        self.reward_timeout_s = float(reward_timeout_s)
        # the names the reward's extra_logs have had, given on every sample (0 where a call had none)
        self._reward_log_keys: dict[str, None] = {}
        self._reward_takes_responses = self.reward_func is not None and _accepts_keyword(
            self.reward_func, "responses"
        )
        self.training_step = 1
        self.evaluating = False
        self._group = None
        self._group_name: str | None = None
        self._seed = seed
        self._seed_step: int | None = None
        self._seen: dict[int, int] = {}
        self._unfinished = 0  # trajectories requested and not yet returned (OpenRLHF balances on it)

    @staticmethod
    def _launch_sglang(
        model_path: str,
        seed: int,
        tensor_parallel_size: int = 1,
        mem_fraction_static: float | None = None,
        enable_memory_saver: bool = False,
        extra_server_args: str = "",
        launch_timeout_s: float = 900.0,
        command: list[str] | None = None,
        log_dir: str | None = None,
        deterministic: bool = False,
    ):
        """SGLang's launch_server on this actor's GPUs (or `command`, a stand-in speaking the same API,
        with {port} filled in). Its log goes to log_dir ($LATR_SGLANG_LOG_DIR, else the temp dir)."""
        from latr_sglang.engines.sglang_launch import SGLANG_SERVER_ENV, ServerProcess, sglang_server_command

        port = _free_port()
        cmd = (
            [part.format(port=port) for part in command]
            if command
            else sglang_server_command(
                model_path,
                port,
                tensor_parallel_size,
                mem_fraction_static,
                seed,
                enable_memory_saver,
                extra_server_args,
                deterministic=deterministic,
            )
        )
        log_dir = (
            log_dir
            or os.environ.get("LATR_SGLANG_LOG_DIR")
            or os.path.join(tempfile.gettempdir(), "latr-sglang")
        )
        log = os.path.join(log_dir, f"sglang_server_{os.getpid()}_{port}.log")
        return ServerProcess(cmd, f"http://127.0.0.1:{port}", log, launch_timeout_s, env=SGLANG_SERVER_ENV)

    def get_num_unfinished_requests(self) -> int:
        return self._unfinished

    def set_training_step(self, step: int) -> None:
        """The mix-ratio schedule is keyed by training step."""
        self.training_step = step

    def set_eval_mode(self, evaluating: bool) -> None:
        """Evaluation samples plainly (the paper validates with stochastic sampling), training with LATR."""
        self.evaluating = evaluating

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
        eta = 0.0 if self.sampler_kind == "stochastic" or self.evaluating else None
        # The seed depends on (engine seed, training step, prompt, its n-th request this step), not on a
        # per-process call counter: a run resumed from a checkpoint draws what the uninterrupted run drew.
        if self._seed_step != self.training_step:
            self._seed_step, self._seen = self.training_step, {}
        key = zlib.crc32(prompt.encode("utf-8"))
        self._seen[key] = self._seen.get(key, 0) + 1
        call_seed = zlib.crc32(f"{self._seed}:{self.training_step}:{key}:{self._seen[key]}".encode())
        self._unfinished += num_samples
        try:
            group = (
                await sampler.sample(
                    [prompt_ids],
                    num_samples,
                    step=self.training_step,
                    eta=eta,
                    seed=call_seed,
                )
            )[0]
        finally:
            self._unfinished -= num_samples
        stats = tree_stats(group)
        # OpenRLHF puts extra_logs into Experience.info (samples_generator.py:289-292), which its actor
        # averages into the step's metrics: the latr/* names below reach tensorboard/wandb as they are.
        group_logs = {
            "latr/branches_created": stats["branches_created"],
            "latr/branches_pruned": stats["branches_pruned"],
            "latr/tree_exit_step": stats["tree_exit_step"],
            "latr/shared_token_fraction": stats["shared_token_fraction"],
            "latr/pairwise_edit_distance": pairwise_edit_distance([t.token_ids for t in group.trajectories]),
            "latr/eta": float(
                eta if eta is not None else mix_ratio(self.latr.mix_ratio_schedule, self.training_step)
            ),
        }
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
                    # tree metadata of this sample (-1: none), for a tree-aware advantage later
                    "latr/origin_tree": float(traj.origin == "tree"),
                    "latr/branch_id": float(-1 if traj.branch_id is None else traj.branch_id),
                    "latr/parent": float(-1 if traj.parent is None else traj.parent),
                    "latr/birth_step": float(-1 if traj.birth_step is None else traj.birth_step),
                    "latr/shared_prefix_len": float(traj.shared_prefix_len),
                    **group_logs,  # the same group-level numbers on each of its samples
                },
            }
            outputs.append(out)
        if self.reward_func is not None:  # one call for the group (a batch, as reward_func takes)
            queries = [tok.decode(out["observation_tokens"], skip_special_tokens=False) for out in outputs]
            # the responses decoded from their own tokens, so the reward need not cut them out of the queries
            responses = [tok.decode(t.token_ids, skip_special_tokens=False) for t in group.trajectories]
            n = len(outputs)
            rewards, scores, logs = await self._score(queries, [prompt] * n, [label] * n, responses)
            for i, out in enumerate(outputs):
                out["reward"], out["scores"] = rewards[i], scores[i]
                out["extra_logs"].update({key: values[i] for key, values in logs.items()})
        return outputs

    async def _score(
        self, queries: list[str], prompts: list[str], labels: list[Any], responses: list[str]
    ) -> tuple[list[float], list[float], dict[str, list[float]]]:
        """(rewards, scores, extra_logs per sample) of one batch from the reward file, within
        reward_timeout_s: past it the batch scores 0 (one warning; latr/reward_timeout = 1 on its samples).
        Non-finite rewards or scores score 0 (one warning; latr/reward_nonfinite = 1 on those samples). A
        malformed return value or an exception of reward_func raises, naming the file."""
        n, path = len(queries), self._reward_path
        extra = {"responses": responses} if self._reward_takes_responses else {}
        future = _in_daemon_thread(self.reward_func, queries, prompts, labels, **extra)
        done, _ = await asyncio.wait({future}, timeout=self.reward_timeout_s)
        if not done:
            future.cancel()  # its thread runs on, abandoned (a daemon: it cannot hold the process at exit)
            logger.warning(
                "--reward.remote_url %s: reward_func did not return within %g s (--trainer.reward_timeout_s) "
                "for a batch of %d samples; they score 0 (metric latr/reward_timeout)",
                path,
                self.reward_timeout_s,
                n,
            )
            logs = {key: [0.0] * n for key in self._reward_log_keys}
            logs["latr/reward_timeout"] = [1.0] * n
            logs["latr/reward_nonfinite"] = [0.0] * n
            return [0.0] * n, [0.0] * n, logs
        try:
            result = future.result()
        except Exception as e:  # a bug in the reward code: stop, naming it (not silently 0)
            raise RuntimeError(
                f"--reward.remote_url {path}: reward_func raised {type(e).__name__}: {e}"
            ) from e
        rewards, scores, user_logs = reward_values(result, n, path)
        scores = list(rewards) if scores is None else scores
        nonfinite = [i for i in range(n) if not (math.isfinite(rewards[i]) and math.isfinite(scores[i]))]
        if nonfinite:
            i = nonfinite[0]
            logger.warning(
                "--reward.remote_url %s: reward_func returned non-finite rewards or scores for %d of %d "
                "samples (e.g. reward %r, score %r); they score 0 (metric latr/reward_nonfinite)",
                path,
                len(nonfinite),
                n,
                rewards[i],
                scores[i],
            )
            for i in nonfinite:
                rewards[i] = scores[i] = 0.0
        self._reward_log_keys.update(dict.fromkeys(user_logs))
        # every sample carries the same names (OpenRLHF stacks them across the batch)
        logs = {key: user_logs.get(key, [0.0] * n) for key in self._reward_log_keys}
        logs["latr/reward_timeout"] = [0.0] * n
        bad = set(nonfinite)
        logs["latr/reward_nonfinite"] = [float(i in bad) for i in range(n)]
        return rewards, scores, logs

    async def greedy(self, prompt: str, max_new_tokens: int) -> list[int]:
        """The engine's greedy response token ids (a check that it holds the trained weights; no effect on
        the sampling seeds or the step's LATR state)."""
        prompt_ids = self.tokenizer(text=prompt, add_special_tokens=False)["input_ids"]
        sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
        sampler = LATRSampler(
            self.engine, self.latr, sampling, self.eos_ids, lambda t: self.tokenizer.decode([t])
        )
        group = (await sampler.sample([prompt_ids], 1, step=self.training_step, eta=0.0, seed=0))[0]
        return list(group.trajectories[0].token_ids)

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
            raise NotImplementedError(
                "--vllm.sync_with_ray is not supported with LATR engines; use the NCCL (or gloo) group"
            )
        from openrlhf_ext.vllm_shim import sync_backend

        backend = sync_backend(backend, self.device)  # the rule the trainer's side applies too
        self._group_name = group_name
        if self.backend == "sglang":  # the server joins the group itself, at rank_offset (and its TP ranks)
            await self.engine.init_weights_update_group(
                master_address, master_port, rank_offset, world_size, group_name, backend
            )
            return
        from latr_sglang.engines.weight_sync import WeightSyncGroup

        self._group = await asyncio.to_thread(
            WeightSyncGroup, master_address, master_port, rank_offset, world_size, backend, group_name
        )

    async def update_weight(
        self, name: str, dtype: torch.dtype, shape: tuple, empty_cache: bool = False
    ) -> None:
        if self._group_name is None:
            raise RuntimeError("update_weight before init_process_group")
        if self.backend == "sglang":
            # SGLang keeps its radix cache across a weight update unless asked to flush it, and OpenRLHF
            # resets it only with --vllm.enable_prefix_caching: the sync's last tensor (empty_cache=True,
            # ppo_actor.py broadcast_to_vllm) asks for the flush, or KV of the old weights would serve the
            # next rollout's shared prefixes (the prompts' template, a repeated prompt).
            await self.engine.update_weights_from_distributed(
                [name], [dtype], [list(shape)], self._group_name, flush_cache=bool(empty_cache)
            )
            return
        tensor = torch.empty(shape, dtype=dtype)
        await asyncio.to_thread(self._group.broadcast, tensor, 0)
        await self.engine.update_weights({name: tensor})

    async def update_weight_cuda_ipc(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "CUDA IPC weight sync (--train.colocate_all with NCCL) is vLLM-specific; with LATR engines use "
            "--vllm.sync_backend nccl without --train.colocate_all, or gloo"
        )

    async def reset_prefix_cache(self) -> None:
        await self.engine.flush_cache()

    async def sleep(self, level: int = 1) -> None:
        """Colocation: an SGLang server started with --enable-memory-saver frees weights and KV cache."""
        if self.backend == "sglang":
            await self.engine.release_memory_occupation()

    async def wake_up(self, tags: Any = None) -> None:
        if self.backend == "sglang":
            await self.engine.resume_memory_occupation(list(tags) if tags else None)

    async def pause_generation(self) -> None:
        return None

    async def resume_generation(self) -> None:
        return None

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def create_rollout_engines(
    num_engines: int,
    tensor_parallel_size: int,
    pretrain: str,
    seed: int,
    full_determinism: bool,
    enable_prefix_caching: bool,
    enforce_eager: bool,
    max_model_len: int,
    shared_pg: Any = None,
    gpu_memory_utilization: float | None = None,
    vllm_enable_sleep: bool = False,
    logprobs_mode: str | None = None,
    agent_func_path: str | None = None,
    remote_rm_url: str | None = None,
    max_images_per_prompt: int = 0,
    *,
    ext: dict,
) -> list:
    """OpenRLHF's `create_vllm_engines`, making LATR engine actors: one per engine, placed on its GPUs the
    way OpenRLHF places vLLM engines (a packed placement group, or the shared one when colocated), or on CPU
    slots when the cluster has no GPUs. `ext` is `args.latr_ext` (rollout, sglang, latr settings)."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    if agent_func_path:
        raise ValueError("--train.agent_func_path (multi-turn agents) is not supported with LATR engines")
    if max_images_per_prompt:
        raise ValueError("--data.max_images_per_prompt: LATR engines serve text models only")
    rollout, sglang = ext["rollout"], ext["sglang"]
    num_engines = sglang.get("num_engines") or num_engines
    tp = sglang.get("tensor_parallel_size") or tensor_parallel_size
    urls = [u for u in (sglang.get("server_urls") or "").split(",") if u]
    # --trainer.device cpu: the cluster's GPUs are logical (openrlhf_ext.cpu_mode), the engines run on CPU
    cpu_mode = (ext.get("trainer") or {}).get("device") == "cpu"
    on_gpu = ray.cluster_resources().get("GPU", 0) > 0 and not urls and not cpu_mode
    if rollout["backend"] == "torch" and tp > 1:
        raise ValueError(f"tensor_parallel_size={tp}: the torch engine runs on one device")
    if shared_pg is not None and tp > 1:
        raise ValueError("--train.colocate_all with tensor-parallel LATR engines is not supported")
    # An engine actor holds all the GPUs of its engine (one bundle of tp GPUs): an SGLang server it launches
    # sees exactly those. Colocated (shared_pg from OpenRLHF, tp = 1) it takes a fraction of a trainer GPU.
    gpus = (0.2 if shared_pg is not None else tp) if on_gpu else 0
    if on_gpu and shared_pg is None:
        shared_pg = placement_group([{"GPU": tp, "CPU": 1}] * num_engines, strategy="PACK")
        ray.get(shared_pg.ready())
    launch = {
        "tensor_parallel_size": tp,
        "mem_fraction_static": sglang.get("mem_fraction_static") or gpu_memory_utilization,
        "enable_memory_saver": vllm_enable_sleep,
        "extra_server_args": sglang.get("extra_server_args", ""),
        "launch_timeout_s": sglang.get("launch_timeout_s", 900.0),
        "deterministic": full_determinism,  # --train.full_determinism_enable
    }
    engines = []
    for i in range(num_engines):
        options: dict[str, Any] = {"num_cpus": 1 if not gpus else min(gpus, 1), "num_gpus": gpus}
        if on_gpu:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=shared_pg,
                placement_group_capture_child_tasks=True,
                placement_group_bundle_index=i,
            )
        kwargs: dict[str, Any] = {
            "model_path": pretrain,
            "backend": rollout["backend"],
            "latr": ext["latr"],
            "sampler": rollout["sampler"],
            "remote_rm_url": remote_rm_url,
            "seed": seed + i,
            "reward_timeout_s": (ext.get("trainer") or {}).get("reward_timeout_s") or REWARD_TIMEOUT_S,
        }
        if rollout["backend"] == "sglang":
            kwargs.update({"sglang_url": urls[i]} if urls else {"sglang_launch": launch})
        else:
            kwargs["device"] = "cuda" if gpus else "cpu"
        engines.append(ray.remote(LATRRolloutActor).options(**options).remote(**kwargs))
    # An engine that fails to start (a bad reward file, a model it cannot load) fails here, at once, with
    # its error: otherwise the trainer would wait for it at the weight-sync rendezvous (300 s) first.
    ray.get([engine.__ray_ready__.remote() for engine in engines])
    if vllm_enable_sleep:
        ray.get([engine.sleep.remote() for engine in engines])
    return engines
