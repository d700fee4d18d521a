"""Tiny random causal LMs built on the fly (seconds): the substrate of tests and quick benchmarks.

A byte-level BPE tokenizer trained on a small built-in text, and a Qwen2/Llama config with random weights.
Real architectures and real tokenizers, just small and untrained.
"""

from __future__ import annotations

from pathlib import Path

import torch

_CORPUS = """\
A conversation between User and Assistant. The user asks a question, and the Assistant solves it.
The assistant first thinks about the reasoning process in the mind and then provides the user with the answer.
Using the numbers [19, 36, 55, 7], create an equation that equals 65. You can use basic arithmetic operations
(+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. And return the
final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.
Let me solve this step by step. 55 + 36 - 19 - 7 = 65. So the answer is <answer> 55 + 36 - 19 - 7 </answer>.
Solve the following math problem step by step. The last line of your response should be of the form
Answer: $Answer where $Answer is the answer to the problem. What is 3 + 4 * 2? First multiply, then add.
The capital of France is Paris. The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 100
"""
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tiny_tokenizer(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
    )


def make_tiny_model(
    path: str | Path,
    arch: str = "qwen2",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    vocab_size: int = 384,
    max_position_embeddings: int = 2048,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    init_std: float = 0.5,
    tie_word_embeddings: bool = False,
) -> Path:
    """Writes a random model + tokenizer folder at `path` and returns it.

    init_std is large on purpose: the next-token distributions of a tiny random model are then peaked enough
    to make greedy decoding and LATR's fork thresholds behave non-trivially.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    path = Path(path)
    tokenizer = make_tiny_tokenizer(vocab_size)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=init_std,
    )
    if arch == "qwen2":
        config = Qwen2Config(**common)
    elif arch == "llama":
        config = LlamaConfig(**common)
    else:
        raise ValueError(f"arch={arch!r}: expected 'qwen2' or 'llama'")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
