"""The torch reference engine: continuous batching over a ragged forward, with a prefix cache.

A scheduler thread owns the model. Each step it admits waiting requests (matching their input against the
prefix cache and copying the shared KV), feeds every active sequence's pending tokens in one ragged forward
(prefill chunks and decode tokens together, so a continuation never waits for unrelated requests to finish),
samples one token per sequence that has consumed its input, and retires finished sequences into the prefix
cache. Control operations (weight updates, cache flushes) run between steps.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import queue
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latr_sglang.engines.base import (
    FinishReason,
    GenerateOutput,
    GenerateRequest,
    RequestError,
    check_part_ends,
)
from latr_sglang.engines.prefix_cache import PrefixCache
from latr_sglang.engines.ragged_model import RaggedCausalLM, RaggedItem

logger = logging.getLogger(__name__)

# Engines not closed yet. At interpreter exit their threads are stopped first: a daemon engine thread still in
# a torch call (it frees its KV pool right after the last request) while the interpreter tears torch down
# aborts the process ("terminate called without an active exception").
_open_engines: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_engines() -> None:
    for engine in list(_open_engines):
        engine.close_sync()


@dataclass
class _Sequence:
    request: GenerateRequest
    on_done: Callable[[GenerateOutput], None]
    generator: torch.Generator
    stop_ids: frozenset[int]
    tokens: list[int] = field(default_factory=list)  # input + output so far
    pending: list[int] = field(default_factory=list)  # tokens fed to the model next (no KV yet)
    row: int = -1  # KV pool row while active
    cached_tokens: int = 0
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    input_logprobs: list[tuple[int, float | None]] = field(default_factory=list)
    input_top_logprobs: list[list[tuple[int, float]] | None] = field(default_factory=list)
    cancelled: bool = False
    # output in parts: called from the engine thread with the tokens since the last part whenever the output
    # reaches one of `part_ends` tokens and the request goes on (the rest comes with on_done)
    on_part: Callable[[GenerateOutput], None] | None = None
    part_ends: frozenset[int] = frozenset()
    part_start: int = 0

    @property
    def prompt_len(self) -> int:
        return len(self.request.input_ids)

    def input_logit_positions(self) -> range:
        """Absolute positions whose logits give the requested input log-probs."""
        start = self.request.logprob_start_len
        if start < 0:
            return range(0)
        return range(max(start - 1, 0), self.prompt_len - 1)


class RequestHandle:
    def __init__(self, seq: _Sequence) -> None:
        self._seq = seq

    def cancel(self) -> None:
        self._seq.cancelled = True


class _Mailbox:
    """Outputs on their way from the engine thread to one event loop: the engine thread posts (a finished
    request for a future, or a part of a streamed one for its queue), and only the first post into an empty
    box wakes the loop (call_soon_threadsafe writes to a pipe and takes the GIL from the loop; LATR finishes
    several short requests per engine step)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # the engine's loop -> mailbox map is weak: the loop must not be kept
        self.items: deque[tuple[asyncio.Future | asyncio.Queue, GenerateOutput]] = deque()
        self.lock = threading.Lock()

    def post(self, to: asyncio.Future | asyncio.Queue, out: GenerateOutput) -> None:
        with self.lock:
            wake = not self.items
            self.items.append((to, out))
        if wake:
            loop = self.loop()
            try:
                if loop is None:
                    raise RuntimeError("event loop gone")
                loop.call_soon_threadsafe(self.drain)
            except RuntimeError:  # the loop was closed: nobody is waiting for these any more
                with self.lock:
                    self.items.clear()

    def drain(self) -> None:
        with self.lock:
            items, self.items = self.items, deque()
        for to, out in items:
            if isinstance(to, asyncio.Queue):
                to.put_nowait(out)
            elif not to.done():
                to.set_result(out)


class TorchEngine:
    """Reference engine over a Hugging Face Llama-family model on CPU or one GPU."""

    def __init__(
        self,
        hf_model: torch.nn.Module,
        tokenizer: Any = None,
        *,
        max_batch_size: int = 64,
        max_prefill_tokens: int = 4096,
        prefix_cache_mb: float | None = None,
        context_length: int | None = None,
        seed: int = 0,
        model_path: str | None = None,
    ) -> None:
        for name, value in (("max_batch_size", max_batch_size), ("max_prefill_tokens", max_prefill_tokens)):
            # 0 would admit nothing: every request would wait forever
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TorchEngine {name}={value!r}: must be an integer >= 1")
        if context_length is not None and (not isinstance(context_length, int) or context_length < 2):
            raise ValueError(f"TorchEngine context_length={context_length!r}: must be an integer >= 2")
        self.model = RaggedCausalLM(hf_model)
        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.model_path = model_path
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.context_length = context_length or int(getattr(hf_model.config, "max_position_embeddings", 2048))
        self.vocab_size = self.model.vocab_size
        self.memory_budget = memory_budget(
            hf_model, self.model.kv_bytes_per_token(), max_batch_size, prefix_cache_mb
        )
        logger.info("torch engine memory budget: %s", self.memory_budget)
        self.prefix_cache = PrefixCache(self.memory_budget["prefix_cache_tokens"])
        self.pool = self._new_pool()  # KV of the active sequences; _active[i] lives in row i
        self.eos_ids = self._eos_ids(hf_model, tokenizer)
        self._seed_rng = random.Random(seed)
        self._inbox: queue.Queue = queue.Queue()
        self._mailboxes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> _Mailbox
        self._mailboxes_lock = threading.Lock()
        self._waiting: deque[_Sequence] = deque()
        self._active: list[_Sequence] = []
        self._closed = False
        self.stats = {
            "steps": 0,
            "prefill_tokens": 0,
            "decode_tokens": 0,
            "cached_tokens": 0,
            "requests": 0,
            "forward_seconds": 0.0,
        }
        self._thread = threading.Thread(target=self._run, name="torch-engine", daemon=True)
        self._thread.start()
        _open_engines.add(self)

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        *,
        dtype: str | torch.dtype = "auto",
        device: str = "cpu",
        **kwargs: Any,
    ) -> TorchEngine:
        from latr_sglang.models import load_model_and_tokenizer

        hf_model, tokenizer, path = load_model_and_tokenizer(model, dtype=dtype, device=device)
        return cls(hf_model, tokenizer, model_path=str(path), **kwargs)

    @staticmethod
    def _eos_ids(hf_model: torch.nn.Module, tokenizer: Any) -> frozenset[int]:
        ids: set[int] = set()
        for source in (getattr(hf_model, "generation_config", None), hf_model.config):
            eos = getattr(source, "eos_token_id", None)
            ids.update([eos] if isinstance(eos, int) else (eos or []))
        if tokenizer is not None and tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
        return frozenset(ids)

    # ---- public API -------------------------------------------------------------------------------------
    def validate(self, request: GenerateRequest) -> None:
        request.validate(self.vocab_size, self.context_length)
        if request.sampling.stop and self.tokenizer is None:
            raise RequestError("sampling_params.stop needs a tokenizer; this engine has none")

    def submit(
        self,
        request: GenerateRequest,
        on_done: Callable[[GenerateOutput], None],
        on_part: Callable[[GenerateOutput], None] | None = None,
        part_ends: Iterable[int] = (),
    ) -> RequestHandle:
        """Thread-safe. `on_done` runs in the engine thread with the output; with `on_part`, it gets a part
        (the tokens since the last one, finish_reason None) whenever the output reaches one of `part_ends`
        tokens and goes on, and `on_done` gets the rest (streaming; `join_parts` gives the whole)."""
        self.validate(request)
        return self._submit_valid(request, on_done, on_part, check_part_ends(part_ends))

    def _submit_valid(
        self,
        request: GenerateRequest,
        on_done: Callable[[GenerateOutput], None],
        on_part: Callable[[GenerateOutput], None] | None = None,
        part_ends: Iterable[int] = (),
    ) -> RequestHandle:
        if self._closed:
            raise RuntimeError("the engine is closed")
        seed = request.sampling.sampling_seed
        if seed is None:
            seed = self._seed_rng.getrandbits(63)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        stop_ids = frozenset(request.sampling.stop_token_ids) | (
            frozenset() if request.sampling.ignore_eos else self.eos_ids
        )
        seq = _Sequence(
            request=request,
            on_done=on_done,
            generator=generator,
            stop_ids=stop_ids,
            on_part=on_part,
            part_ends=frozenset(part_ends),
        )
        self._inbox.put(("submit", seq))
        return RequestHandle(seq)

    def _mailbox(self) -> _Mailbox:
        loop = asyncio.get_running_loop()
        with self._mailboxes_lock:  # several threads may each run a loop against this engine
            mailbox = self._mailboxes.get(loop)
            if mailbox is None:
                mailbox = self._mailboxes[loop] = _Mailbox(loop)
        return mailbox

    async def generate(self, requests: list[GenerateRequest]) -> list[GenerateOutput]:
        for r in requests:  # all of them before any is submitted: a bad request fails the call alone
            self.validate(r)
        loop = asyncio.get_running_loop()
        mailbox = self._mailbox()
        futures, handles = [], []
        for r in requests:
            fut = loop.create_future()
            handles.append(self._submit_valid(r, lambda out, fut=fut: mailbox.post(fut, out)))
            futures.append(fut)
        try:
            if len(futures) == 1:  # LATR's requests come one at a time: no gathering future for them
                return [await futures[0]]
            return list(await asyncio.gather(*futures))
        except asyncio.CancelledError:
            for h in handles:
                h.cancel()
            raise

    async def generate_in_parts(
        self, request: GenerateRequest, part_ends: Iterable[int]
    ) -> AsyncIterator[GenerateOutput]:
        """One request's output in parts, as it decodes: a part whenever the output reaches one of
        `part_ends` tokens and goes on (finish_reason None), then the rest (finish_reason set; prompt, cache
        and input log-prob fields as `generate` gives them). Each part holds only its new tokens. Closing the
        iterator early cancels the request."""
        self.validate(request)
        part_ends = check_part_ends(part_ends)
        mailbox = self._mailbox()
        parts: asyncio.Queue = asyncio.Queue()

        def deliver(out: GenerateOutput) -> None:  # the parts and the rest, in order, through one queue
            mailbox.post(parts, out)

        handle = self._submit_valid(request, deliver, on_part=deliver, part_ends=part_ends)
        done = False
        try:
            while not done:
                part = await parts.get()
                done = part.finish_reason is not None
                yield part
        finally:
            if not done:
                handle.cancel()

    def generate_sync(self, requests: list[GenerateRequest]) -> list[GenerateOutput]:
        for r in requests:
            self.validate(r)
        results: list[GenerateOutput | None] = [None] * len(requests)
        done = threading.Semaphore(0)

        def deliver_to(i: int) -> Callable[[GenerateOutput], None]:
            def deliver(out: GenerateOutput) -> None:
                results[i] = out
                done.release()

            return deliver

        for i, r in enumerate(requests):
            self.submit(r, deliver_to(i))
        for _ in requests:
            done.acquire()
        return results  # type: ignore[return-value]

    def load(self) -> dict[str, int]:
        """Sequences decoding now and waiting for a pool row (approximate: read without a lock; metrics)."""
        return {"running": len(self._active), "waiting": len(self._waiting) + self._inbox.qsize()}

    def call_in_engine_thread(self, fn: Callable[[], Any]) -> Any:
        """Runs `fn` between two steps and returns its result (or raises its exception)."""
        if threading.current_thread() is self._thread:
            return fn()
        box: dict[str, Any] = {}
        done = threading.Event()
        self._inbox.put(("control", fn, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def update_weights_sync(
        self, named_tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
    ):
        items = list(named_tensors.items()) if isinstance(named_tensors, Mapping) else list(named_tensors)
        # state_dict names every alias of a tied weight (lm_head.weight and embed_tokens.weight), unlike
        # named_parameters; keep_vars gives the live tensors to copy into.
        params = self.hf_model.state_dict(keep_vars=True)
        for name, tensor in items:
            if name not in params:
                raise KeyError(f"update_weights: no parameter named {name!r} in the model")
            if tuple(tensor.shape) != tuple(params[name].shape):
                raise ValueError(
                    f"update_weights: {name!r} has shape {tuple(tensor.shape)}, "
                    f"the model expects {tuple(params[name].shape)}"
                )
            if tensor.dtype.is_floating_point != params[name].dtype.is_floating_point:
                raise ValueError(
                    f"update_weights: {name!r} has dtype {tensor.dtype}, the model has {params[name].dtype}"
                )
            # before any copy (all or nothing): a diverged trainer's NaN/inf would silently poison rollouts
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"update_weights: {name!r} contains NaN/inf; no weight was written")

        def apply() -> int:
            with torch.no_grad():
                for name, tensor in items:
                    params[name].copy_(tensor.to(params[name].device, params[name].dtype))
            self.prefix_cache.clear()  # cached KV was computed with the old weights
            return len(items)

        return self.call_in_engine_thread(apply)

    async def update_weights(self, named_tensors: Any) -> None:
        await asyncio.to_thread(self.update_weights_sync, named_tensors)

    def load_weights_from_disk(self, path: str) -> int:
        """In-place update from the *.safetensors files of a Hugging Face folder."""
        from safetensors.torch import load_file

        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors files in {path!r}")
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(str(f)))
        return self.update_weights_sync(state)

    def flush_cache_sync(self) -> None:
        self.call_in_engine_thread(self.prefix_cache.clear)

    async def flush_cache(self) -> None:
        await asyncio.to_thread(self.flush_cache_sync)

    def close_sync(self) -> None:
        if self._closed:
            return
        self._closed = True
        _open_engines.discard(self)
        self._inbox.put(("close",))
        self._thread.join(timeout=30)

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def __enter__(self) -> TorchEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close_sync()

    # ---- engine thread ----------------------------------------------------------------------------------
    def _new_pool(self):
        return self.model.new_pool(max_rows=self.max_batch_size)

    def _run(self) -> None:
        while True:
            try:
                block = not self._active and not self._waiting
                if block and self.pool.rows:  # idle: give the pool's memory back (a trainer may need it)
                    self.pool = self._new_pool()
                message = self._inbox.get(block=block, timeout=None) if block else self._inbox.get_nowait()
            except queue.Empty:
                message = None
            if message is not None:
                kind = message[0]
                if kind == "submit":
                    self._waiting.append(message[1])
                elif kind == "control":
                    _, fn, box, done = message
                    try:
                        box["result"] = fn()
                    except BaseException as e:
                        box["error"] = e
                    done.set()
                elif kind == "close":
                    for seq in [*self._active, *self._waiting]:
                        self._finish(seq, FinishReason.ABORT, error="engine closed")
                    return
                continue  # drain the inbox before stepping
            try:
                self._step()
            except Exception as e:  # a failed step aborts its sequences; the engine keeps serving
                logger.exception("engine step failed")
                for seq in self._active:
                    self._finish(seq, FinishReason.ABORT, error=f"{type(e).__name__}: {e}")
                self._active = []
                self.pool = self._new_pool()

    def _admit(self, seq: _Sequence) -> None:
        """Activates `seq` in the next pool row, starting from the longest cached prefix of its input."""
        req = seq.request
        ids = np.asarray(req.input_ids, dtype=np.int64)
        entry, usable = self.prefix_cache.match(ids)
        usable = min(usable, len(ids) - 1)  # the last input token is always fed: its logits start the output
        if req.logprob_start_len >= 0:
            usable = min(usable, max(req.logprob_start_len - 1, 0))
        usable = max(usable, 0) if entry is not None else 0
        seq.row = len(self._active)
        self.pool.reserve(seq.row + 1, len(ids) + min(req.sampling.max_new_tokens, 256))
        self.pool.load(seq.row, entry.kv if entry is not None else None, usable)
        self._active.append(seq)
        seq.cached_tokens = usable
        seq.tokens = list(req.input_ids)
        seq.pending = list(req.input_ids[usable:])
        self.stats["cached_tokens"] += usable
        self.stats["requests"] += 1

    def _retire(self, done: set[int]) -> None:
        """Removes the sequences at these active indices, filling each hole with the last row."""
        for i in sorted(done, reverse=True):
            last = len(self._active) - 1
            if i != last:
                self.pool.move(last, i)
                self._active[i] = self._active[last]
                self._active[i].row = i
            else:
                self.pool.lengths[i] = 0
            self._active.pop()

    def _step(self) -> None:
        cancelled = {i for i, seq in enumerate(self._active) if self._drop_if_cancelled(seq)}
        if cancelled:
            self._retire(cancelled)
        while self._waiting and len(self._active) < self.max_batch_size:
            seq = self._waiting.popleft()
            if not self._drop_if_cancelled(seq):
                self._admit(seq)
        if not self._active:
            return

        items: list[RaggedItem] = []
        completes: list[bool] = []
        budget = self.max_prefill_tokens
        for seq in self._active:
            if len(seq.pending) == 1:
                feed = seq.pending
            else:
                feed = seq.pending[: max(budget, 1)]
                budget -= len(feed)
            done_input = len(feed) == len(seq.pending)
            start = self.pool.lengths[seq.row]
            wanted = seq.input_logit_positions()
            offsets = [i for i in range(len(feed)) if start + i in wanted]
            if done_input and seq.request.sampling.max_new_tokens > 0:
                offsets.append(len(feed) - 1)
            items.append(RaggedItem(seq.row, list(feed), offsets))
            completes.append(done_input)

        t0 = time.perf_counter()
        logits = self.model.forward(self.pool, items)
        self.stats["forward_seconds"] += time.perf_counter() - t0
        self.stats["steps"] += 1

        finished: set[int] = set()
        rows, row_index = [], []
        for index, (seq, item, done_input, seq_logits) in enumerate(
            zip(self._active, items, completes, logits)
        ):
            fed = len(item.token_ids)
            start = self.pool.lengths[seq.row] - fed
            self.stats["prefill_tokens" if fed > 1 or not seq.output_ids else "decode_tokens"] += fed
            seq.pending = seq.pending[fed:]
            n_input = sum(1 for i in range(fed) if start + i in seq.input_logit_positions())
            if n_input:
                self._record_input_logprobs(seq, start, item.logit_offsets[:n_input], seq_logits[:n_input])
            if not done_input:
                continue
            if seq.request.sampling.max_new_tokens == 0:
                self._finish(seq, FinishReason.LENGTH)
                finished.add(index)
            else:
                rows.append(seq_logits[-1])
                row_index.append(index)
        if rows:
            seqs = [self._active[i] for i in row_index]
            for index, done in zip(row_index, self._sample(seqs, torch.stack(rows))):
                if done:
                    finished.add(index)
        self._retire(finished)

    def _record_input_logprobs(self, seq: _Sequence, start: int, offsets: list[int], logits: torch.Tensor):
        req = seq.request
        logp = torch.log_softmax(logits, dim=-1)  # [n, vocab]
        if req.logprob_start_len == 0 and not seq.input_logprobs:
            seq.input_logprobs.append((req.input_ids[0], None))
            seq.input_top_logprobs.append(None)
        for row, off in enumerate(offsets):
            target = req.input_ids[start + off + 1]
            seq.input_logprobs.append((target, float(logp[row, target])))
            if req.top_logprobs_num:
                vals, idx = logp[row].topk(req.top_logprobs_num)
                seq.input_top_logprobs.append(list(zip(idx.tolist(), vals.tolist())))
            else:
                seq.input_top_logprobs.append(None)

    def _sample(self, seqs: list[_Sequence], logits: torch.Tensor) -> list[bool]:
        """Picks one token per sequence from logits [B, vocab]; returns which sequences finished."""
        for row, seq in enumerate(seqs):  # stop tokens are banned until min_new_tokens is reached
            if len(seq.output_ids) < seq.request.sampling.min_new_tokens and seq.stop_ids:
                logits[row, list(seq.stop_ids)] = float("-inf")
        raw_logprobs = torch.log_softmax(logits, dim=-1)  # [B, vocab]
        tokens = logits.argmax(dim=-1)  # greedy rows keep these
        token_logprobs = raw_logprobs.gather(1, tokens[:, None])[:, 0]
        sampled = [row for row, seq in enumerate(seqs) if not seq.request.sampling.greedy]
        if sampled:
            rows = torch.tensor(sampled)
            params = [seqs[row].request.sampling for row in sampled]
            temperatures = torch.tensor([sp.temperature for sp in params], dtype=logits.dtype)[:, None]
            if bool((temperatures == 1.0).all()):
                logprobs = raw_logprobs[rows]
            else:
                logprobs = torch.log_softmax(logits[rows] / temperatures, dim=-1)  # [S, vocab]
            picked = _sample_batch(logprobs, params, [seqs[row].generator for row in sampled])
            tokens[rows] = picked
            token_logprobs[rows] = logprobs.gather(1, picked[:, None])[:, 0]
        max_top = max(s.request.top_logprobs_num for s in seqs)
        if max_top:
            top_vals, top_idx = raw_logprobs.topk(max_top, dim=-1)
            top_vals, top_idx = top_vals.tolist(), top_idx.tolist()
        finished = []
        for row, (seq, token, logprob) in enumerate(zip(seqs, tokens.tolist(), token_logprobs.tolist())):
            seq.output_ids.append(token)
            seq.tokens.append(token)
            seq.logprobs.append(logprob)
            if seq.request.top_logprobs_num:
                k = seq.request.top_logprobs_num
                seq.top_logprobs.append(list(zip(top_idx[row][:k], top_vals[row][:k])))
            seq.pending = [token]
            done = self._check_finished(seq, token)
            if not done and seq.on_part is not None and len(seq.output_ids) in seq.part_ends:
                self._send_part(seq)
            finished.append(done)
        return finished

    def _send_part(self, seq: _Sequence) -> None:
        start, end = seq.part_start, len(seq.output_ids)
        seq.part_start = end
        part = GenerateOutput(
            output_ids=seq.output_ids[start:end],
            logprobs=seq.logprobs[start:end],
            top_logprobs=seq.top_logprobs[start:end],
            finish_reason=None,
            prompt_tokens=seq.prompt_len,
            cached_tokens=seq.cached_tokens,
        )
        try:
            seq.on_part(part)
        except Exception:  # a broken consumer must not take the engine down
            logger.exception("part callback failed")

    def _check_finished(self, seq: _Sequence, token: int) -> bool:
        sp = seq.request.sampling
        n_out = len(seq.output_ids)
        if token in seq.stop_ids and n_out >= sp.min_new_tokens:
            self._finish(seq, FinishReason.STOP, matched=token)
            return True
        if sp.stop and n_out >= sp.min_new_tokens:
            window = max(len(s) for s in sp.stop) + 8
            tail = self.tokenizer.decode(seq.output_ids[-window:])
            for s in sp.stop:
                if s in tail:
                    self._finish(seq, FinishReason.STOP, matched=s)
                    return True
        if n_out >= sp.max_new_tokens or len(seq.tokens) >= self.context_length:
            self._finish(seq, FinishReason.LENGTH)
            return True
        return False

    def _drop_if_cancelled(self, seq: _Sequence) -> bool:
        if seq.cancelled:
            self._finish(seq, FinishReason.ABORT, error="cancelled")
        return seq.cancelled

    def _finish(
        self, seq: _Sequence, reason: FinishReason, matched: int | str | None = None, error: str | None = None
    ) -> None:
        if seq.row >= 0 and reason != FinishReason.ABORT:  # keep its KV for requests that extend it
            self.prefix_cache.insert(np.asarray(seq.tokens, dtype=np.int64), self.pool.save(seq.row))
        start = seq.part_start  # a request sent in parts ends with the rest
        out = GenerateOutput(
            output_ids=seq.output_ids[start:] if start else seq.output_ids,
            logprobs=seq.logprobs[start:] if start else seq.logprobs,
            top_logprobs=seq.top_logprobs[start:] if start else seq.top_logprobs,
            finish_reason=reason,
            prompt_tokens=seq.prompt_len,
            cached_tokens=seq.cached_tokens,
            matched_stop=matched,
            input_logprobs=seq.input_logprobs,
            input_top_logprobs=seq.input_top_logprobs,
            error=error,
        )
        try:
            seq.on_done(out)
        except Exception:  # a broken callback must not take the engine down
            logger.exception("request callback failed")


def memory_budget(
    hf_model: torch.nn.Module, kv_bytes_per_token: int, max_live: int, prefix_cache_mb: float | None
) -> dict[str, Any]:
    """What the engine may hold besides the weights, sized by the model and the live sequences.

    The KV pool holds the live sequences (at most `max_live` rows, grown as they need). The prefix cache keeps
    finished requests' KV until the continuations that extend them arrive: LATR keeps about one such entry per
    live branch, so it is sized for `max_live` sequences of CACHE_TOKENS_PER_SEQUENCE positions, and never
    above the weights' own size (a floor of 64 MiB keeps tiny models' caches useful). An explicit
    prefix_cache_mb overrides it.
    """
    unique = {t.data_ptr(): t for t in hf_model.state_dict().values()}  # a tied weight counts once
    weights = sum(t.numel() * t.element_size() for t in unique.values())
    if prefix_cache_mb is None:
        by_live = max_live * CACHE_TOKENS_PER_SEQUENCE * kv_bytes_per_token
        cache_bytes = min(by_live, max(weights, 64 * 2**20))
        source = f"min({max_live} live x {CACHE_TOKENS_PER_SEQUENCE} tokens, max(weights, 64 MiB))"
    else:
        if prefix_cache_mb < 0:
            raise ValueError(f"prefix_cache_mb={prefix_cache_mb}: must be >= 0 (0 turns the cache off)")
        cache_bytes, source = int(prefix_cache_mb * 2**20), "set by prefix_cache_mb"
    return {
        "weights_mb": round(weights / 2**20, 1),
        "kv_kb_per_token": round(kv_bytes_per_token / 1024, 2),
        "max_live_sequences": max_live,
        "prefix_cache_mb": round(cache_bytes / 2**20, 1),
        "prefix_cache_tokens": int(cache_bytes // kv_bytes_per_token),
        "prefix_cache_rule": source,
    }


CACHE_TOKENS_PER_SEQUENCE = 512  # prefix-cache positions budgeted per live sequence


def _sample_batch(logprobs: torch.Tensor, params: list, generators: list[torch.Generator]) -> torch.Tensor:
    """One token per row of logprobs [S, vocab] (temperature already applied), with top-k, top-p and min-p.

    Inverse-CDF sampling with one uniform draw per row from that request's own generator: batched, and each
    request's tokens depend only on its seed. The reported log-prob stays the temperature-scaled one before
    truncation (what SGLang and vLLM report), which is the policy's log-prob at temperature 1.
    """
    probs = logprobs.double().exp()  # [S, vocab]; float64 so the CDF keeps tiny probabilities apart
    for row, sp in enumerate(params):
        if sp.top_k > 0 or sp.top_p < 1.0 or sp.min_p > 0.0:
            _truncate(probs[row], sp)
    cdf = probs.cumsum(dim=-1)
    uniforms = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])
    uniforms = uniforms.to(cdf.device)  # the generators are CPU ones (seeded per request) on any device
    picked = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None], right=True)[:, 0]
    return picked.clamp_max(probs.shape[1] - 1)


def _truncate(probs: torch.Tensor, sp) -> None:
    """Zeroes, in place, the tokens that top-k, top-p and min-p exclude from probs [vocab]."""
    keep = torch.ones_like(probs, dtype=torch.bool)
    if 0 < sp.top_k < probs.shape[0]:
        keep &= probs >= probs.topk(sp.top_k).values[-1]
    if sp.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass strictly before each token
        keep_sorted = before < sp.top_p * sorted_probs.sum()
        keep_sorted[0] = True
        keep &= torch.zeros_like(keep).scatter(0, order, keep_sorted)
    if sp.min_p > 0.0:
        keep &= probs >= sp.min_p * probs.max()
    probs.mul_(keep)
