"""Packaging metadata: what the packages import is declared in pyproject.toml (the commands need only the
base dependencies, training only the `train` extra, SGLang's runtime only `gpu`), the console scripts and
`python -m` entry points start, the version has one source, and a built wheel carries code, data, scripts."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGES = ("latr_sglang", "openrlhf_ext")
# Modules imported on purpose without a declaration, each with the reason.
UNDECLARED_OK = {
    "flash_attn": "optional on a CPU: openrlhf_ext/cpu_compat.py stands in when it is missing",
}
# Lazy imports (inside a function) of an extra's module from a base module, for a path that needs the extra.
OPTIONAL_IN_BASE = {
    (
        "latr_sglang/engines/sglang_http.py",
        "sglang",
    ): "serializer='sglang' (CUDA IPC) is the gpu extra's path",
}
# Where a package needs an extra, and which: every other module may use only the base dependencies.
EXTRA_FOR = {
    "openrlhf_ext": "train",
    "latr_sglang/engines/sglang_inproc.py": "gpu",
    "latr_sglang/engines/sglang_launch.py": "gpu",
}


def _name(requirement: str) -> str:
    """The distribution name of a requirement string, normalized (PEP 503)."""
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


BASE = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
EXTRAS = {k: {_name(r) for r in v} for k, v in PYPROJECT["project"]["optional-dependencies"].items()}


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of every module a file imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in PACKAGES and n != "__future__"}


def distributions_of(module: str) -> set[str]:
    return {_name(d) for d in importlib.metadata.packages_distributions().get(module, [])}


def _allowed(rel: str) -> set[str]:
    for prefix, extra in EXTRA_FOR.items():
        if rel.startswith(prefix):
            return BASE | EXTRAS[extra] | (EXTRAS["train"] if extra == "gpu" else set())
    return BASE


def test_every_third_party_import_is_declared_where_it_is_needed():
    problems = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            for module in sorted(third_party_imports(path)):
                if module in UNDECLARED_OK or (rel, module) in OPTIONAL_IN_BASE:
                    continue
                dists = distributions_of(module)
                if not dists:
                    problems.append(f"{rel}: imports {module!r}, which no installed distribution provides")
                elif not dists & _allowed(rel):
                    where = "the base dependencies" if _allowed(rel) == BASE else "its extra"
                    problems.append(f"{rel}: imports {module!r} ({', '.join(sorted(dists))}), not in {where}")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_function_level_imports(tmp_path):
    file = tmp_path / "m.py"
    file.write_text("import os\n\ndef f():\n    import matplotlib.pyplot\n    from yaml import safe_load\n")
    assert third_party_imports(file) == {"matplotlib", "yaml"}
    assert distributions_of("yaml") == {"pyyaml"}


def test_the_cpu_lock_pins_every_declared_dependency():
    """requirements/cpu.lock is the tested set: each base and train dependency is pinned in it."""
    pinned = {
        _name(line.split("==")[0])
        for line in (REPO / "requirements/cpu.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    missing = sorted((BASE | EXTRAS["train"] | EXTRAS["test"]) - pinned)
    assert not missing, f"declared but not in requirements/cpu.lock: {missing}"


def test_console_scripts_and_module_entry_points_start():
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == {"latr-sglang", "latr-train"}
    for target in scripts.values():
        module, _, func = target.partition(":")
        code = f"import {module} as m; assert callable(m.{func})"
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=REPO)
    version = subprocess.run(
        [sys.executable, "-m", "latr_sglang", "--version"], capture_output=True, text=True, timeout=120
    )
    from latr_sglang import __version__

    assert version.returncode == 0 and version.stdout.strip() == f"latr-sglang {__version__}"
    train = subprocess.run(
        [sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray", "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert train.returncode == 0 and "--rollout.backend" in train.stdout, train.stderr[-2000:]


def test_version_and_license_have_one_source():
    project = PYPROJECT["project"]
    assert "version" in project["dynamic"] and "version" not in project
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "latr_sglang.__version__"}
    assert project["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text


def test_the_bundled_eval_sets_are_shipped_in_wheels():
    from latr_sglang.evaluate import DATASETS

    patterns = PYPROJECT["tool"]["setuptools"]["data-files"]["share/latr-sglang/eval"]
    shipped = {p.name for pattern in patterns for p in REPO.glob(pattern)}
    assert set(DATASETS.values()) <= shipped


@pytest.mark.slow
def test_a_built_wheel_has_code_data_scripts_and_requirements(tmp_path):
    # build from a copy: setuptools writes build/ next to the sources
    source = tmp_path / "src"
    shutil.copytree(
        REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "outputs", "runs", "data", "build")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(source)],
        check=True, timeout=600,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("latr_sglang-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(meta).decode()
        entry_points = z.read(meta.replace("METADATA", "entry_points.txt")).decode()
    assert {"latr_sglang/cli.py", "latr_sglang/__main__.py", "openrlhf_ext/cli/train_ppo_ray.py"} <= names
    assert "latr_sglang/tasks/reward_func.py" in names
    assert any(n.endswith("share/latr-sglang/eval/countdown_test.jsonl") for n in names)
    assert "latr-sglang = latr_sglang.cli:main" in entry_points and "latr-train =" in entry_points
    requires = {
        _name(line.split(":", 1)[1]) for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    }
    assert {"torch", "transformers", "math-verify", "matplotlib", "openrlhf", "sglang"} <= requires
    assert "License-Expression: Apache-2.0" in metadata
