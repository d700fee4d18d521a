"""Shared fixtures: tiny random models built on the fly, a torch engine over them, a live HTTP server."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests run tiny models, many processes at once (servers, Ray workers): one intra-op thread each avoids
# oversubscribing a 2-core machine (a tiny forward costs ~1 ms with one thread, ~300 ms when threads contend).
# Set before torch is imported here or in a child process, which inherits the environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from latr_sglang.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"), arch="qwen2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    from latr_sglang.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama", num_heads=4, num_kv_heads=4)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    from latr_sglang.engines.torch_engine import TorchEngine

    engine = TorchEngine.from_pretrained(str(tiny_model_dir), max_batch_size=64)
    yield engine
    engine.close_sync()


@pytest.fixture(scope="session")
def tiny_server(tiny_engine):
    from latr_sglang.server import ServerThread

    server = ServerThread(tiny_engine).start()
    yield server
    server.stop()


@pytest.fixture
def prompt_ids(tiny_engine):
    tok = tiny_engine.tokenizer
    texts = ["Using the numbers [19, 36, 55, 7], create", "The capital of France", "What is 3 + 4", "0 1 2 3"]
    return [tuple(tok(t).input_ids) for t in texts]


@pytest.fixture(scope="session")
def tiny_engine64(tmp_path_factory):
    """A float64 tiny model: greedy argmax and fork thresholds are then immune to batching noise."""
    import torch

    from latr_sglang.engines.torch_engine import TorchEngine
    from latr_sglang.tiny import make_tiny_model

    path = make_tiny_model(tmp_path_factory.mktemp("tiny64"), dtype=torch.float64)
    engine = TorchEngine.from_pretrained(str(path), dtype="float64")
    yield engine
    engine.close_sync()
