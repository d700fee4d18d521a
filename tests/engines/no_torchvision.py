"""CPU PLACEHOLDER, tests only: an empty `torchvision` for the processes that import SGLang's io_struct.

io_struct imports torchvision transitively (through its multimodal model configs, for image normalization
constants). No torchvision build that loads beside the CPU torch is on PyPI, and requests, weight updates and
their validation do not touch it, so an empty `torchvision` module is registered before the import. Only
scripts that run in their own process install it (sglang_io_check.py, sglang_inproc_weights_check.py), so that
no other test sees the placeholder.
"""

import importlib.abc
import importlib.machinery
import sys
import types


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


def install() -> None:
    import transformers.image_utils  # noqa: F401  (decides "no torchvision" before the placeholder exists)

    sys.meta_path.insert(0, _PlaceholderFinder())
