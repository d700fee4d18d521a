"""Validates /generate payloads with SGLang's own GenerateReqInput and SamplingParams (run as a subprocess).

Reads a JSON list of payloads on stdin; prints a JSON list of {"ok": bool, "error": str}.

CPU PLACEHOLDER, tests only: SGLang's io_struct imports torchvision transitively (through its multimodal model
configs, for image normalization constants). No torchvision build that loads beside the CPU torch is on PyPI,
and request validation does not touch it, so an empty `torchvision` module is registered before the import.
This runs in its own process so that no other test sees the placeholder.
"""

import importlib.abc
import importlib.machinery
import json
import sys
import types

import transformers.image_utils  # noqa: F401  (decides "no torchvision" before the placeholder exists)


class _Placeholder(types.ModuleType):
    """Any attribute is an inert class; any submodule is another placeholder."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        value = type(attr, (), {"__getattr__": lambda self, a: 0})
        setattr(self, attr, value)
        return value


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Placeholder(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _PlaceholderFinder())

from sglang.srt.managers.io_struct import GenerateReqInput  # noqa: E402
from sglang.srt.sampling.sampling_params import SamplingParams  # noqa: E402

results = []
for payload in json.load(sys.stdin):
    try:
        req = GenerateReqInput(**payload)
        req.normalize_batch_and_arguments()
        params = req.sampling_params if isinstance(req.sampling_params, list) else [req.sampling_params]
        for p in params:
            sp = SamplingParams(**p)
            sp.verify(10**6)
        results.append({"ok": True, "error": ""})
    except Exception as e:
        results.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
print(json.dumps(results))
