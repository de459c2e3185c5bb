"""Check the package layout (of ``trajmoe/``; this tool is not part of it): module sizes, import cycles and the stage order.

    python -m tools.layout        # prints the table; exit 1 when a rule is broken

Every ``import`` counts, function-level ones included (a cycle hidden inside a function is still
a cycle); only imports under ``if TYPE_CHECKING:`` are ignored, since they never run. Rules:

* no import cycle between modules;
* a module imports only from its own stage or an earlier one (:data:`STAGES`): the folder layout
  is the data flow, so nothing reaches back up it;
* no module over :data:`MAX_LINES` lines, except data tables (:data:`DATA_TABLES`).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "trajmoe"
# Data flows left to right; a module may import from its own stage or any stage before it.
STAGES = ("errors", "geo", "trajectories", "pois", "city", "model", "train", "analysis", "cli")
SAME_STAGE = {"trajectories": 2, "pois": 2}  # read independently, side by side
MAX_LINES = 400
DATA_TABLES = {"trajmoe.pois.categories"}  # the category table: long by nature


@dataclass
class Layout:
    """Modules of the package with their sizes and the imports between them."""

    lines: dict[str, int] = field(default_factory=dict)  # module -> line count
    imports: dict[str, set[str]] = field(default_factory=dict)  # module -> trajmoe modules it imports

    def cycles(self) -> list[list[str]]:
        """Strongly connected components with more than one module (or a self-import)."""
        index, low, stack, on_stack, out = {}, {}, [], set(), []

        def visit(v: str) -> None:  # Tarjan's algorithm
            index[v] = low[v] = len(index)
            stack.append(v)
            on_stack.add(v)
            for w in sorted(self.imports.get(v, ())):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in self.imports.get(v, ()):
                    out.append(sorted(comp))

        for v in sorted(self.imports):
            if v not in index:
                visit(v)
        return out

    def stage_violations(self) -> list[tuple[str, str]]:
        """(importer, imported) pairs where a module imports from a later stage."""
        return [(a, b) for a, targets in sorted(self.imports.items()) for b in sorted(targets)
                if _stage(b) > _stage(a)]

    def too_long(self) -> list[tuple[str, int]]:
        return [(m, n) for m, n in sorted(self.lines.items()) if n > MAX_LINES and m not in DATA_TABLES]


def _stage(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "errors"
    if top in ("__main__", "cli_parser"):  # the command line: its entry point and its flags
        top = "cli"
    if top in SAME_STAGE:
        return SAME_STAGE[top]
    return STAGES.index(top) if top in STAGES else 0


def _module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(tree: ast.AST, module: str, known: set[str], *, is_package: bool) -> set[str]:
    """trajmoe modules imported anywhere in ``tree`` (TYPE_CHECKING blocks excluded)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    walk(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "trajmoe" and (hit := resolve(alias.name)):
                        found.add(hit)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative import
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.split(".")[0] == "trajmoe":
                    for alias in child.names:  # "from pkg import module" imports the module
                        hit = resolve(f"{base}.{alias.name}") if f"{base}.{alias.name}" in known else resolve(base)
                        if hit:
                            found.add(hit)
            walk(child)

    walk(tree)
    return found


def scan(package_dir: Path = PACKAGE_DIR) -> Layout:
    """Read every module of the package (no import is executed)."""
    files = sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)
    names = {_module_name(p, package_dir): p for p in files}
    layout = Layout()
    for name, path in names.items():
        text = path.read_text()
        layout.lines[name] = len(text.splitlines())
        tree = ast.parse(text, filename=str(path))
        layout.imports[name] = _imported(tree, name, set(names), is_package=path.name == "__init__.py") - {name}
    return layout


def report(layout: Layout) -> tuple[str, bool]:
    """The printed table and whether every rule holds."""
    rows = [f"{n:>5}  {m}" for m, n in sorted(layout.lines.items(), key=lambda kv: (-kv[1], kv[0]))]
    problems = [f"import cycle: {' -> '.join(c)}" for c in layout.cycles()]
    problems += [f"stage order: {a} imports {b}" for a, b in layout.stage_violations()]
    problems += [f"over {MAX_LINES} lines: {m} ({n})" for m, n in layout.too_long()]
    summary = (f"{len(layout.lines)} modules, {sum(layout.lines.values()):,} lines; "
               f"{sum(len(v) for v in layout.imports.values())} internal imports; ")
    summary += "no import cycle, stage order kept, every module within the size limit." if not problems else \
        f"{len(problems)} problem(s):"
    return "\n".join(["lines  module", *rows, "", summary, *problems]), not problems


def main() -> int:
    text, ok = report(scan())
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
