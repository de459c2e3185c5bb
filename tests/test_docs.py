"""The docs name only files, modules and functions that exist (tools/docrefs.py), and the checker
catches a renamed file, a missing function and a stale module path."""

from __future__ import annotations

from tools.docrefs import check_reference, scan
from tools.realdata import REPO_ROOT


def test_every_file_module_and_function_the_docs_name_exists():
    bad = scan()
    assert not bad, "\n".join(map(str, bad))


def test_references_into_the_repository_resolve_or_are_named_wrong():
    here = REPO_ROOT / "README.md"
    assert check_reference("trajmoe/city/data.py", here) is None
    assert check_reference("trajmoe/city/dataset.py", here) == "is no file of the repository"  # renamed
    assert check_reference("dataset.py", here) == "is no file of the repository"
    assert check_reference("trajmoe.city.subset.run_subset", here) is None
    assert "does not define" in check_reference("trajmoe.city.subset.run_subsets", here)
    assert check_reference("trajmoe.train.checkpoint.FORMAT_VERSION", here) is None
    assert "devtools" in check_reference("trajmoe.devtools.layout", here)  # moved to tools/
    assert check_reference("tools.layout", here) is None
    assert check_reference("shapes.Local", here) is None  # app/shapes.py, as the app imports it
    for not_ours in ("numpy.radians", "../shared/data/MANIFEST.md", "st.session_state", "python", "--data"):
        assert check_reference(not_ours, here) is None


def _tree(root, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_every_kind_of_wrong_name(tmp_path):
    _tree(tmp_path, {
        "trajmoe/__init__.py": '"""The package."""\n',
        "trajmoe/city/__init__.py": "",
        "trajmoe/city/data.py": (
            '"""Cities. Batches are built by ``dataset.py``; see `trajmoe.city.data.CityData.is_return`."""\n'
            "class CityData:\n"
            "    def __init__(self):\n"
            "        self.is_return = None  # a comment naming trajmoe/city/gone.py\n"
            "def run_subset():\n"
            '    """See :func:`trajmoe.city.data.CityData.nothing` and :mod:`trajmoe.city.data`."""\n'),
        "bench/results/keep.txt": "",
        "README.md": ("# Title\n\nRead `trajmoe/city/data.py` and `trajmoe.city.data.run_subset()`; outputs go to\n"
                      "`bench/results/new.md`; data in `../shared/data/MANIFEST.md`.\n\n"
                      "```\npython -m trajmoe.city.prepare --help\n```\n\nAlso `trajmoe.city.data.run_subsets`.\n"),
    })
    bad = {(str(b.file), b.line, b.ref) for b in scan(tmp_path)}
    assert bad == {
        ("trajmoe/city/data.py", 1, "dataset.py"),
        ("trajmoe/city/data.py", 4, "trajmoe/city/gone.py"),
        ("trajmoe/city/data.py", 6, "trajmoe.city.data.CityData.nothing"),
        ("README.md", 7, "trajmoe.city.prepare"),  # in a fenced block
        ("README.md", 10, "trajmoe.city.data.run_subsets"),
    }
