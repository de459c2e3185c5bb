"""``python bench/transfer.py --data DIR DIR ...``: leave-one-city-out on a researcher's own prepared folders."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from bench.transfer_cache import RUNS, stale_runs
from bench.transfer_runs import TransferSettings, folder_key, load_folders
from tools.realdata import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "transfer.py"


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory, sample_trajectories, sample_pois):
    """Two small prepared folders (40 synthetic people each, H3 resolution 9), named as two cities."""
    from trajmoe.city.prepare import prepare

    root = tmp_path_factory.mktemp("own")
    frame = pd.read_csv(sample_trajectories)
    users = frame["user_id"].unique()
    folders = []
    for name, part in (("north town", users[:40]), ("south__bay", users[40:80])):
        csv = root / f"{len(folders)}.csv"
        frame[frame["user_id"].isin(part)].to_csv(csv, index=False)
        prepare(csv, city=name.title(), out=root / name, pois=sample_pois, resolution=9)
        folders.append(root / name)
    return folders


def test_folder_keys_and_errors(two_folders, tmp_path):
    assert [folder_key(f) for f in two_folders] == ["north_town", "south_bay"]
    with pytest.raises(SystemExit, match="at least 2"):
        load_folders(two_folders[:1])
    with pytest.raises(SystemExit, match="trajmoe prepare"):
        load_folders([two_folders[0], tmp_path])
    assert set(load_folders(two_folders)) == {"north_town", "south_bay"}


def test_settings_are_checked_and_name_longer_pretraining_rows():
    assert TransferSettings().pre("trajmoe_zero_shot") == "trajmoe_zero_shot"
    assert TransferSettings(pretrain_steps=3000).pre("trajmoe_zero_shot") == "trajmoe_zero_shot_3000"
    with pytest.raises(ValueError, match="seeds"):
        TransferSettings(seeds=0)


def test_no_committed_run_file_is_stale():
    """Every committed run file is one the current versions read (bench/transfer_cache.py); an old
    version's files are deleted when its version is bumped (git keeps them)."""
    assert len(list(RUNS.glob("*.json"))) > 400
    assert stale_runs(RUNS) == []


def test_data_runs_leave_one_city_out_end_to_end(two_folders, tmp_path):
    out = tmp_path / "custom"
    cmd = [sys.executable, str(SCRIPT), "--data", *map(str, two_folders), "--out", str(out),
           "--pretrain-steps", "3", "--seeds", "1", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = json.loads((out / "transfer.json").read_text())
    assert set(table) == {"north_town", "south_bay"}
    expected = {"trajmoe_pretrained_ft1_3@0.05", "trajmoe_zero_shot_3@0.05",
                *(f"{m}@{f}" for m in ("popular", "markov", "epr") for f in ("0.05", "1"))}
    for rows in table.values():
        assert set(rows) == expected
        for row in rows.values():
            assert row["returns"]["n"] + row["explorations"]["n"] == row["n"] > 0
    assert len(list((out / "transfer_runs").glob("*.json"))) == 2 * len(expected)
    assert len(list((out / "cache" / "ckpt").glob("*.safetensors"))) == 2  # one pretraining per target
    assert "## target: north_town" in (out / "transfer.md").read_text()
    again = subprocess.run([*cmd, "--table-only"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads((out / "transfer.json").read_text()) == table
