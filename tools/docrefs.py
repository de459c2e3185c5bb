"""Check that the docs name only files, modules and functions that exist in the repository.

    python -m tools.docrefs        # prints every reference that does not resolve; exit 1 if any

Read: the docstrings and comments of every Python file, and the Markdown files (READMEs, the model
card). Checked: every word that is a path ending in .py or .md, and what is written in backticks
(``x``, `x`, :func:`x`) and in fenced code blocks, token by token:

* a path ending in .py or .md with a ``/`` (``trajmoe/city/prepare.py``): a file relative to the
  repository root or to the file that names it (``../`` paths, globs and absolute paths are not
  checked; under ``bench/results/``, where scripts write their outputs, only the folder);
* a bare file name ending in .py: some file of that name in the repository;
* a dotted name rooted at one of the repository's import roots (``trajmoe.city.subset.run_subset``,
  ``tools.realdata``, ``kept_map.MapLayout`` for app/): the module, then a top-level name in it, then
  (for a class) a name in its body or set on ``self`` in its methods.

Nothing is imported; modules are read with :mod:`ast`.
"""

from __future__ import annotations

import ast
import io
import os
import re
import sys
import tokenize
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Import root -> the folder it lives in (app/'s modules import each other by bare name).
ROOTS = {"trajmoe": "", "tools": "", "bench": "", "views": "app", "shapes": "app", "map_png": "app",
         "state": "app", "streamlit_app": "app", "app_pages": "app"}
SKIP_DIRS = {".git", ".venv", "build", "__pycache__", ".pytest_cache", ".ruff_cache", "cache", "custom"}
_TICKS = re.compile(r"(`+)(.+?)\1", re.S)
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_PATH = re.compile(r"^[\w.\-/]+\.(?:py|md)$")
_PATH_WORD = re.compile(r"(?<![\w./-])([\w.\-/]+\.(?:py|md))\b")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")
_STRIP = "()[]{},;:'\"!?"


@dataclass(frozen=True)
class BadRef:
    file: Path
    line: int
    ref: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: `{self.ref}` {self.why}"


def _texts_of_python(source: str) -> list[tuple[int, str]]:
    """(first line, text) of every docstring and comment."""
    out = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                out.append((body[0].lineno, body[0].value.value))
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out.append((tok.start[0], tok.string))
    return out


def _texts_of_markdown(source: str) -> list[tuple[int, str]]:
    return [(1, source)]


def _candidates(text: str) -> list[tuple[int, str]]:
    """(line offset in ``text``, token) of every backticked or fenced token and every path-like word."""
    found = [(text.count("\n", 0, m.start()), m.group(1).strip(".")) for m in _PATH_WORD.finditer(text)]
    spans = [(text.count("\n", 0, m.start()), m.group(0).strip("`")) for m in _FENCE.finditer(text)]
    rest = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)  # same lines, no fences
    spans += [(rest.count("\n", 0, m.start(2)), m.group(2)) for m in _TICKS.finditer(rest)]
    for base, chunk in spans:
        for k, line in enumerate(chunk.split("\n")):
            for token in line.split():
                token = re.sub(r":\d+$", "", token.strip(_STRIP)).removesuffix("()").strip(_STRIP)
                if token:
                    found.append((base + k, token))
    return sorted(set(found))


@cache
def _names(path: Path) -> dict[str, set[str] | None]:
    """Top-level names of a module -> the names of the class body (None for a non-class)."""
    tree = ast.parse(path.read_text())
    names: dict[str, set[str] | None] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = set()
            for sub in ast.walk(node):
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    members.add(sub.name)
                elif isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
                    members.add(sub.target.id)
                elif isinstance(sub, ast.Assign):
                    members |= {t.id for t in sub.targets if isinstance(t, ast.Name)}
                if isinstance(sub, (ast.Assign, ast.AnnAssign)):  # self.x = ... in a method
                    targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                    members |= {t.attr for t in targets if isinstance(t, ast.Attribute)
                                and isinstance(t.value, ast.Name) and t.value.id == "self"}
            names[node.name] = members
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = None
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Name):
                        names[t.id] = None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = None
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = None
        elif isinstance(node, (ast.If, ast.Try)):  # names bound under if/try at top level
            for sub in ast.walk(node):
                if isinstance(sub, (ast.FunctionDef, ast.ClassDef)):
                    names.setdefault(sub.name, None)
                elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    names.setdefault(sub.id, None)
                elif isinstance(sub, ast.alias):
                    names.setdefault((sub.asname or sub.name).split(".")[0], None)
    return names


def _check_dotted(ref: str, root: Path) -> str | None:
    """Why ``ref`` (rooted at one of :data:`ROOTS`) does not resolve, or None when it does."""
    parts = ref.split(".")
    here = root / ROOTS[parts[0]] / parts[0]
    module, i = None, 1
    if here.with_suffix(".py").is_file():
        module = here.with_suffix(".py")
    elif here.is_dir():
        while i < len(parts):
            if (here / parts[i]).is_dir():
                here, i = here / parts[i], i + 1
            elif (here / f"{parts[i]}.py").is_file():
                module, i = here / f"{parts[i]}.py", i + 1
                break
            else:
                break
        if module is None:
            module = here / "__init__.py"
            if not module.is_file():
                return f"names {'.'.join(parts[:i + 1])}, which is no module"
    else:
        return "names a module that does not exist"
    attrs = parts[i:]
    if not attrs:
        return None
    names = _names(module)
    if attrs[0] not in names:
        return f"names {attrs[0]}, which {module.relative_to(root)} does not define"
    members = names[attrs[0]]
    if len(attrs) > 1 and members is not None and attrs[1] not in members:
        return f"names {attrs[1]}, which class {attrs[0]} in {module.relative_to(root)} does not have"
    return None


@cache
def _file_names(root: Path) -> frozenset[str]:
    return frozenset(p.name for p in _files(root, ".py"))


def _files(root: Path, suffix: str) -> list[Path]:
    """The repository's files ending in ``suffix``, outside :data:`SKIP_DIRS` (not walked at all)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        found += [Path(folder) / f for f in files if f.endswith(suffix)]
    return sorted(found)


def check_reference(ref: str, where: Path, root: Path = REPO_ROOT) -> str | None:
    """Why ``ref``, named in file ``where``, does not resolve; None when it does or is not a reference."""
    if _PATH.match(ref):
        if "/" not in ref:
            return None if not ref.endswith(".py") or ref in _file_names(root) else "is no file of the repository"
        if ref.startswith(("/", "~", "..")) or "*" in ref:
            return None
        if (root / ref).exists() or (where.parent / ref).exists():
            return None
        if ref.startswith("bench/results/") and (root / ref).parent.is_dir():
            return None  # an output its script writes
        return "is no file of the repository"
    if _DOTTED.match(ref) and ref.split(".")[0] in ROOTS and not ref.endswith((".py", ".md")):
        return _check_dotted(ref, root)
    return None


def scan(root: Path = REPO_ROOT) -> list[BadRef]:
    """Every reference in the repository's docstrings, comments and Markdown that does not resolve."""
    bad = []
    for path in _files(root, ".py") + _files(root, ".md"):
        source = path.read_text()
        texts = _texts_of_python(source) if path.suffix == ".py" else _texts_of_markdown(source)
        for line, text in texts:
            for offset, ref in _candidates(text):
                why = check_reference(ref, path, root)
                if why:
                    bad.append(BadRef(path.relative_to(root), line + offset, ref, why))
    return bad


def main() -> int:
    bad = scan()
    print("\n".join(map(str, bad)) or "every file, module and function the docs name exists.")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
