"""Locate the shared real-data folder (``../shared/data`` next to the repository root).

Tests and benchmarks read real public mobility data from there and never copy it into the repo.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """Return ``../shared/data`` relative to the repo root (or ``$TRAJMOE_SHARED_DATA``), or None."""
    env = os.environ.get("TRAJMOE_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for path in candidates:
        if (path / "MANIFEST.md").is_file():
            return path
    return None
