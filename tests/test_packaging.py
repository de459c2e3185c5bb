"""Packaging: every third-party package the code imports is declared in pyproject.toml, and a clean
``pip install .`` gives a package whose every module imports (without the repository's tools/)."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tools.realdata import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
# The repository's own import roots: the package, tools/, and app/'s modules and folders (the app
# runs with app/ on sys.path: `import state`, `import maps`, ...).
LOCAL = {"trajmoe", "tools"} | {p.stem for p in (REPO_ROOT / "app").iterdir() if p.suffix == ".py" or p.is_dir()}


def _imported_tops(folder: Path) -> set[str]:
    """Top-level names of every absolute import in ``folder``'s Python files (function-level ones too)."""
    tops = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                tops |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.split(".")[0])
    return {t for t in tops if t not in sys.stdlib_module_names and t not in LOCAL and t != "__future__"}


def _declared(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower().replace("_", "-") for r in requirements}


def _distributions(tops: set[str]) -> dict[str, str]:
    """Import name -> the distribution that installs it (in this environment)."""
    dists = packages_distributions()
    missing = sorted(t for t in tops if t not in dists)
    assert not missing, f"imported but not installed here: {missing}"
    return {t: dists[t][0].lower().replace("_", "-") for t in tops}


def test_every_package_the_library_imports_is_a_runtime_dependency():
    runtime = _declared(PYPROJECT["project"]["dependencies"])
    used = _distributions(_imported_tops(REPO_ROOT / "trajmoe"))
    assert {"scipy", "torch", "h3"} <= set(used.values())
    assert sorted(f"{t} ({d})" for t, d in used.items() if d not in runtime) == []


def test_every_package_the_app_imports_is_a_runtime_or_app_dependency():
    declared = _declared(PYPROJECT["project"]["dependencies"]) | _declared(PYPROJECT["project"]["optional-dependencies"]["app"])
    used = _distributions(_imported_tops(REPO_ROOT / "app"))
    assert {"streamlit", "matplotlib"} <= set(used.values())
    assert sorted(f"{t} ({d})" for t, d in used.items() if d not in declared) == []


def test_every_declared_dependency_is_pinned_in_requirements():
    pinned = _declared([line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
                        if line and not line.startswith("#")])
    project = PYPROJECT["project"]
    declared = _declared(project["dependencies"]) | _declared(project["optional-dependencies"]["app"])
    assert sorted(declared - pinned) == []


def test_the_package_ships_neither_tools_nor_the_sample_generator():
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["trajmoe*"]
    assert not list((REPO_ROOT / "trajmoe").rglob("devtools/*.py"))
    assert not list((REPO_ROOT / "trajmoe").rglob("synthetic*.py"))


@pytest.mark.slow
def test_a_clean_install_imports_every_module(tmp_path):
    """``pip install -c requirements.txt .`` into a fresh virtual environment (minutes), then every
    module of the installed trajmoe imports from a folder outside the repository. Built from a copy
    of what the package is made of, so no build/ folder of an earlier build can add stale modules."""
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT / "trajmoe", source / "trajmoe", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # nothing of the repo's
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=env)
    python = venv / "bin" / "python"
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(REPO_ROOT / "requirements.txt"),
                          str(source)], capture_output=True, text=True, timeout=1800, env=env)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    expected = sorted(".".join(p.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
                      for p in (REPO_ROOT / "trajmoe").rglob("*.py"))
    code = ("import importlib, importlib.util, pkgutil, trajmoe\n"
            "names = ['trajmoe'] + [m.name for m in pkgutil.walk_packages(trajmoe.__path__, 'trajmoe.')]\n"
            "for name in names:\n"
            "    if name != 'trajmoe.__main__':  # importing it runs the command line\n"
            "        importlib.import_module(name)\n"
            "print(trajmoe.__file__)\n"
            "print(importlib.util.find_spec('tools') is None)\n"
            "print(*sorted(names), sep='\\n')\n")
    run = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    where, no_tools, *names = run.stdout.split()
    assert where.startswith(str(venv)) and no_tools == "True"
    assert names == expected
