"""The README's library example runs as written (from a folder laid out like the repository root)."""

from __future__ import annotations

import re
import subprocess
import sys

from tools.realdata import REPO_ROOT


def test_the_library_example_runs(tmp_path):
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Library"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    for name in ("sample_data", "assets"):  # the example's relative paths, without writing into the repo
        (tmp_path / name).symlink_to(REPO_ROOT / name)
    proc = subprocess.run([sys.executable, "-c", "import torch; torch.set_num_threads(1)\n" + code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'fraction': 0.05" in proc.stdout and "acc@1" in proc.stdout
    assert (tmp_path / "helsinki_ft.safetensors").is_file() and (tmp_path / "helsinki_ft.json").is_file()
