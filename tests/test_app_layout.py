"""The app keeps its layout rules (read from the source, nothing run): short modules, no widget in
``app/state/`` (state holds data; the pages and ``app/page_parts.py`` show it), no module-level
mutable dict shared by every session, and every widget key the entry file keeps across page
switches is a widget key of its page."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
MAX_LINES = 450
# What state/ may use of Streamlit: its caches, the session's state, the link's query (its token), a
# server option, and the progress bar a long computation draws and empties itself (a cache hit
# replays nothing visible; inputs.py says so).
STATE_MAY_USE = {"cache_data", "cache_resource", "session_state", "query_params", "get_option", "progress"}
# Scripts Streamlit runs anew on every run, in a fresh namespace: their dicts live one run, never shared.
SCRIPTS = {APP / "streamlit_app.py", *(APP / "app_pages").glob("*.py")}
MUTABLE_DICT_CALLS = {"dict", "defaultdict", "OrderedDict", "Counter"}


def modules() -> list[Path]:
    return sorted(APP.rglob("*.py"))


def streamlit_uses(tree: ast.AST) -> set[str]:
    """Every ``st.NAME`` (``import streamlit as st``) and ``from streamlit import NAME`` in ``tree``."""
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "st"}
    return used | {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and (node.module or "").split(".")[0] == "streamlit" for alias in node.names}


def mutable_dicts(tree: ast.Module) -> list[str]:
    """Names bound at module level to a dict (literal, comprehension or dict-making call)."""
    found = []
    for node in tree.body:
        targets, value = ((node.targets, node.value) if isinstance(node, ast.Assign) else
                          ([node.target], node.value) if isinstance(node, ast.AnnAssign) else ([], None))
        call = value.func if isinstance(value, ast.Call) else None
        name = call.id if isinstance(call, ast.Name) else call.attr if isinstance(call, ast.Attribute) else None
        if isinstance(value, (ast.Dict, ast.DictComp)) or name in MUTABLE_DICT_CALLS:
            found += [ast.unparse(t) for t in targets]
    return found


def widget_keys(tree: ast.AST) -> set[str]:
    """The constant ``key=`` of every call in ``tree``."""
    return {kw.value.value for node in ast.walk(tree) if isinstance(node, ast.Call) for kw in node.keywords
            if kw.arg == "key" and isinstance(kw.value, ast.Constant)}


def kept_keys() -> dict[str, tuple[str, ...]]:
    """Page file -> the widget keys the entry file keeps for it (its ``PAGES`` table)."""
    tree = ast.parse((APP / "streamlit_app.py").read_text())
    table = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "PAGES" for t in node.targets))
    return {page.args[0].value: tuple(k.value for k in keys.elts) for page, keys in (row.elts for row in table.elts)}


def test_no_app_module_is_over_450_lines():
    sizes = {str(p.relative_to(APP)): len(p.read_text().splitlines()) for p in modules()}
    assert {"maps/deck.py", "kept_map.py", "state/predictions.py", "page_parts.py"} <= set(sizes)
    assert not {m: n for m, n in sizes.items() if n > MAX_LINES}


def test_state_holds_data_and_no_widget():
    for path in (APP / "state").glob("*.py"):
        assert streamlit_uses(ast.parse(path.read_text())) <= STATE_MAY_USE, path.name
    # the rule bites: a button, a warning, a column, a spinner, an imported widget
    source = ("import streamlit as st\nfrom streamlit import toggle\n@st.cache_data\ndef f():\n    st.progress(0.5)\n"
              "    with st.spinner('x'):\n        a, b = st.columns(2)\n    if st.button('go'):\n        st.warning('w')\n")
    assert streamlit_uses(ast.parse(source)) - STATE_MAY_USE == {"toggle", "spinner", "columns", "button", "warning"}


def test_no_module_level_mutable_dict_in_the_app():
    for path in set(modules()) - SCRIPTS:
        assert not mutable_dicts(ast.parse(path.read_text())), path.relative_to(APP)
    source = ("from types import MappingProxyType\nA = {}\nB: dict = dict(x=1)\nC = {k: 1 for k in 'ab'}\n"
              "D = MappingProxyType({'x': 1})\nE = (1, 2)\ndef f():\n    g = {}\n")
    assert mutable_dicts(ast.parse(source)) == ["A", "B", "C"]


def test_each_page_keeps_only_its_own_widget_keys():
    kept = kept_keys()
    assert set(kept) == {f"app_pages/{p.name}" for p in (APP / "app_pages").glob("*.py")}  # every page listed
    assert "fl_hours" in kept["app_pages/flows.py"] and "sc_action" in kept["app_pages/scenario.py"]
    for page, keys in kept.items():
        missing = set(keys) - widget_keys(ast.parse((APP / page).read_text()))
        assert not missing, f"{page} has no widget with key {sorted(missing)}"
