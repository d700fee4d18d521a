"""Model folders: one that transformers cannot load is named with what it lacks, before any loading."""

import pytest

from latr_sglang.models import check_model_dir, resolve_model_path


def folder(tmp_path, *files: str, config: str = '{"model_type": "qwen2"}'):
    path = tmp_path / "m"
    path.mkdir()
    if config is not None:
        (path / "config.json").write_text(config)
    for name in files:
        (path / name).write_bytes(b"x")
    return path


@pytest.mark.parametrize(
    ("files", "config", "error", "needle"),
    [
        (
            (),
            '{"model_type": "qwen2"}',
            FileNotFoundError,
            "no weights (model.safetensors, pytorch_model.bin",
        ),
        (("tokenizer.json", "tokenizer_config.json"), "{}", FileNotFoundError, "no weights"),
        (("model.safetensors",), "{}", FileNotFoundError, "no tokenizer files (tokenizer.json"),
        # a tokenizer_config.json alone loads an empty tokenizer: every prompt encodes to nothing
        (("model.safetensors", "tokenizer_config.json"), "{}", FileNotFoundError, "no tokenizer files"),
        (("model.safetensors", "tokenizer.json"), "{bad", ValueError, "config.json is not valid JSON"),
        (("model.safetensors", "tokenizer.json"), "[1, 2]", ValueError, "config.json is not a JSON object"),
        (("model.safetensors", "tokenizer.json"), "\udcff", ValueError, "config.json is not valid JSON"),
    ],
)
def test_a_folder_that_cannot_load_is_named_with_what_it_lacks(tmp_path, files, config, error, needle):
    if config == "\udcff":
        path = folder(tmp_path, *files, config=None)
        (path / "config.json").write_bytes(b"\xff\xfe")
    else:
        path = folder(tmp_path, *files, config=config)
    with pytest.raises(error) as raised:
        resolve_model_path(str(path))
    assert needle in str(raised.value) and str(path) in str(raised.value), raised.value


@pytest.mark.parametrize(
    "files",
    [
        ("model.safetensors", "tokenizer.json"),
        ("model-00001-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json"),
        ("pytorch_model.bin", "vocab.json", "merges.txt"),
        ("model.gguf", "tokenizer.model"),
    ],
)
def test_loadable_folders_pass(tmp_path, files):
    path = folder(tmp_path, *files)
    assert resolve_model_path(str(path)) == path


def test_the_tiny_test_model_passes(tiny_model_dir):
    check_model_dir(tiny_model_dir)
    assert resolve_model_path(tiny_model_dir) == tiny_model_dir


def test_not_a_folder_is_still_named_as_before(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config.json there.*never downloaded"):
        resolve_model_path(str(tmp_path / "nope"))


def test_the_default_models_names_match_in_any_case(tmp_path, monkeypatch):
    from latr_sglang import models

    monkeypatch.setattr(models, "embedded_model_dir", lambda: tmp_path / "embedded")
    assert resolve_model_path("SmolLM2") == resolve_model_path("smollm2") == tmp_path / "embedded"
    with pytest.raises(FileNotFoundError, match="only the benchmarks build"):
        resolve_model_path("tiny")
