"""The package layout keeps its rules: no import cycle, no import back up the stages, short modules."""

from __future__ import annotations

import re
import subprocess
import sys

from tools.layout import MAX_LINES, report, scan
from tools.realdata import REPO_ROOT


def test_the_package_keeps_its_layout_rules():
    layout = scan()
    text, ok = report(layout)
    assert ok, text
    assert {"trajmoe.city.subset", "trajmoe.train.finetune", "trajmoe.analysis.privacy"} <= set(layout.lines)
    assert all(n <= MAX_LINES for m, n in layout.lines.items() if m != "trajmoe.pois.categories")


def test_the_layout_script_prints_module_sizes():
    proc = subprocess.run([sys.executable, "-m", "tools.layout"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "trajmoe.city.subset" in proc.stdout and "no import cycle" in proc.stdout


def _package(tmp_path, files: dict[str, str]):
    root = tmp_path / "trajmoe"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if path.parent != root and not (path.parent / "__init__.py").exists():
            (path.parent / "__init__.py").write_text('"""pkg."""\n')
    return root


def test_a_cycle_hidden_in_a_function_and_an_import_back_up_are_found(tmp_path):
    root = _package(tmp_path, {
        "city/a.py": "def f():\n    from trajmoe.train.b import g\n    return g\n",
        "train/b.py": "from trajmoe.city.a import f\n\ndef g():\n    return f\n",
        "city/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from trajmoe.train.b import g\n",
        "model/long.py": "x = 1\n" * (MAX_LINES + 1),
    })
    layout = scan(root)
    assert layout.cycles() == [["trajmoe.city.a", "trajmoe.train.b"]]
    assert layout.stage_violations() == [("trajmoe.city.a", "trajmoe.train.b")]  # c's TYPE_CHECKING import runs never
    assert layout.too_long() == [("trajmoe.model.long", MAX_LINES + 1)]
    text, ok = report(layout)
    assert not ok and "import cycle: trajmoe.city.a -> trajmoe.train.b" in text


def test_relative_and_package_imports_resolve_to_modules(tmp_path):
    root = _package(tmp_path, {
        "pois/x.py": "from . import y\nfrom .y import z\n",
        "pois/y.py": "z = 1\n",
        "trajectories/r.py": "import trajmoe.pois.y\n",
    })
    layout = scan(root)
    assert layout.imports["trajmoe.pois.x"] == {"trajmoe.pois.y"}
    assert layout.imports["trajmoe.trajectories.r"] == {"trajmoe.pois.y"}  # side by side: allowed
    assert not layout.cycles() and not layout.stage_violations()


def test_the_readme_layout_table_names_every_module():
    """README.md § Layout: an entry per subpackage of trajmoe/ naming each of its modules, and the
    top-level modules; a module added or renamed without the table fails here."""
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme[readme.index("## Layout"):].split("```")[1]
    entries, current = {}, None
    for line in block.splitlines():
        head = re.match(r"^  (\S.*?)(?:\s{2,}|$)", line)  # the first column: "city/", "errors.py, geo.py"
        if head:
            current = head.group(1)
            entries[current] = line
        elif current and line.startswith("    "):
            entries[current] += " " + line
    package = REPO_ROOT / "trajmoe"
    missing = []
    for sub in sorted(p for p in package.iterdir() if (p / "__init__.py").is_file()):
        text = entries.get(f"{sub.name}/")
        if text is None:
            missing.append(f"{sub.name}/")
            continue
        words = set(re.findall(r"\w+", text))
        missing += [f"{sub.name}/{m.name}" for m in sorted(sub.glob("*.py"))
                    if m.stem != "__init__" and m.stem not in words]
    top = {name for column in entries for name in column.split(", ")}
    missing += [m.name for m in sorted(package.glob("*.py")) if m.stem not in ("__init__", "__main__")
                and m.name not in top]
    assert not missing, f"README.md's layout table does not name: {missing}"
