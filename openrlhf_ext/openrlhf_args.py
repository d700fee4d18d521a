"""OpenRLHF's own `train_ppo_ray` command line, reused without importing the module (which imports vLLM).

OpenRLHF builds its parser and validates the parsed flags inside `if __name__ == "__main__":`. We read that
block from the installed file and run its two halves separately: the statements up to `parse_args()` give
the exact parser of the installed version (every flag, default and help unchanged), and the statements after
`hierarchize(args)` up to `train(args)` are its validation and derived settings. Nothing is copied, so a new
OpenRLHF version brings its flags with it; the tests pin the structure we rely on.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
from pathlib import Path
from typing import Any

MODULE = "openrlhf.cli.train_ppo_ray"


class OpenRLHFMissing(RuntimeError):
    """OpenRLHF is not installed: latr-train takes its flags from OpenRLHF's own CLI module."""


@functools.cache
def _main_block() -> tuple[Path, list[ast.stmt], list[ast.stmt], list[ast.stmt]]:
    try:  # find_spec imports the parent packages: a missing `openrlhf` raises here
        spec = importlib.util.find_spec(MODULE)
    except ModuleNotFoundError:
        spec = None
    if spec is None or spec.origin is None:
        raise OpenRLHFMissing(
            "latr-train needs OpenRLHF 0.11.2: pip install 'latr-sglang[train]' (GPU), or on a CPU the "
            "pinned set (README, 'Install': pip install --no-deps -r requirements/cpu.lock)"
        )
    path = Path(spec.origin)
    tree = ast.parse(path.read_text(), filename=str(path))
    main = next(
        (
            node
            for node in tree.body
            if isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "__name__"
        ),
        None,
    )
    if main is None:
        raise RuntimeError(f"{path}: no `if __name__ == '__main__':` block to take the parser from")

    def is_call(stmt: ast.stmt, attr: str) -> bool:
        value = stmt.value if isinstance(stmt, ast.Assign | ast.Expr) else None
        func = value.func if isinstance(value, ast.Call) else None
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        return name == attr

    body = main.body
    parse_at = next((i for i, s in enumerate(body) if is_call(s, "parse_args")), None)
    hier_at = next((i for i, s in enumerate(body) if is_call(s, "hierarchize")), None)
    train_at = next((i for i, s in enumerate(body) if is_call(s, "train")), None)
    if parse_at is None or hier_at is None or train_at is None or not parse_at < hier_at < train_at:
        raise RuntimeError(
            f"{path}: the main block no longer reads parse_args -> hierarchize -> train; "
            "openrlhf_ext.openrlhf_args needs updating for this OpenRLHF version"
        )
    # the module's own imports, minus OpenRLHF's trainer and Ray (the parser needs neither; they pull vLLM)
    imports = [
        node
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        and not any(
            name.split(".")[0] in ("openrlhf", "ray")
            for name in (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            )
        )
    ]
    return path, imports, body[:parse_at], body[hier_at + 1 : train_at]


def _run(statements: list[ast.stmt], namespace: dict[str, Any]) -> dict[str, Any]:
    path = _main_block()[0]
    module = ast.Module(body=statements, type_ignores=[])
    exec(compile(module, str(path), "exec"), namespace)
    return namespace


def openrlhf_parser() -> argparse.ArgumentParser:
    """A fresh copy of the installed OpenRLHF's train_ppo_ray parser."""
    _, imports, build, _ = _main_block()
    namespace = _run(imports + build, {"__name__": MODULE})
    parser = namespace["parser"]
    parser.allow_abbrev = False  # a prefix of a flag must not silently select it
    return parser


def hierarchize(args: argparse.Namespace) -> argparse.Namespace:
    from openrlhf.utils.config import hierarchize as openrlhf_hierarchize

    return openrlhf_hierarchize(args)


def finalize(args: argparse.Namespace) -> argparse.Namespace:
    """OpenRLHF's validation and derived settings, run on hierarchized args (in place). Its checks are
    asserts; a failing one raises ValueError with OpenRLHF's message."""
    _, imports, _, validate = _main_block()
    try:
        _run(imports + validate, {"args": args, "__name__": MODULE})
    except AssertionError as e:
        raise ValueError(f"OpenRLHF rejects these flags: {e}") from None
    except (AttributeError, TypeError) as e:  # its checks assume flags it does not check for first
        raise ValueError(f"OpenRLHF's flag validation failed on these flags: {e}") from None
    return args
