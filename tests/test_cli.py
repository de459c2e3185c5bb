"""The `trajmoe` command: --help everywhere, clear errors (no traceback), real files end to end."""

import json
import subprocess
import sys

import pytest

from tools.realdata import REAL_DATASETS
from trajmoe.cli import build_parser, main

VERBS = ["validate", "pois", "prepare", "pretrain", "finetune", "evaluate", "baseline", "predict"]


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "trajmoe", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("verb", VERBS)
def test_help_on_every_verb(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    assert "usage: trajmoe " + verb in capsys.readouterr().out


def test_parser_knows_every_verb():
    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    assert set(sub.choices) == set(VERBS)


def test_validate_malformed_names_problem_and_rows(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,timestamp,lat,lon\n"
                   "a,2024-01-01T08:00:00,60.1,24.9\n"
                   "a,not a time,60.1,24.9\n"
                   "b,2024-01-01T09:00:00,123.0,24.9\n"
                   "b,2024-01-01T10:00:00,60.2,24.8\n")
    proc = _cli("validate", bad)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert "unparsable timestamp" in out and "out of range" in out
    assert "2" in out and "3" in out  # the row numbers
    renamed = tmp_path / "renamed.csv"
    renamed.write_text("uid,when,latitude,longitude\n")
    proc = _cli("validate", renamed)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr


def test_validate_good_file_prints_counts(sample_trajectories):
    proc = _cli("validate", sample_trajectories)
    assert proc.returncode == 0, proc.stderr
    assert "34,395" in proc.stdout or "34395" in proc.stdout


def test_missing_files_and_folders_give_one_line(tmp_path):
    for args in (["prepare", "--trajectories", tmp_path / "nope.csv", "--city", "X", "--out", tmp_path / "o"],
                 ["evaluate", "--checkpoint", tmp_path / "m.safetensors", "--data", tmp_path, "--json", tmp_path / "j"],
                 ["baseline", "--model", "markov", "--data", tmp_path / "nothing", "--json", tmp_path / "j"]):
        proc = _cli(*args)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error:"), proc.stderr


def test_prepare_and_baseline_on_embedded_default(tmp_path, sample_trajectories, sample_pois):
    out = tmp_path / "hel"
    proc = _cli("prepare", "--trajectories", sample_trajectories, "--city", "Helsinki", "--out", out,
                "--pois", sample_pois)
    assert proc.returncode == 0, proc.stderr
    assert "Prepared Helsinki" in proc.stdout
    proc = _cli("baseline", "--model", "markov", "--data", out, "--json", tmp_path / "m.json")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics) >= {"acc@1", "acc@5", "acc@10", "mrr", "ndcg@10", "n"} and metrics["n"] > 1000
    assert metrics["returns"]["n"] + metrics["explorations"]["n"] == metrics["n"]  # split by target kind
    # --threads sets torch's thread count for the model verbs; 2 gives the same numbers as 1
    proc = _cli("--threads", "2", "baseline", "--model", "markov", "--data", out, "--json", tmp_path / "m2.json")
    assert proc.returncode == 0, proc.stderr
    again = json.loads((tmp_path / "m2.json").read_text())
    assert {k: again[k] for k in ("acc@1", "mrr", "n")} == {k: metrics[k] for k in ("acc@1", "mrr", "n")}
    proc = _cli("--threads", "0", "baseline", "--model", "markov", "--data", out, "--json", tmp_path / "m3.json")
    assert proc.returncode == 2 and "--threads must be >= 1" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("key", list(REAL_DATASETS))
def test_prepare_every_real_city(key, shared_data, tmp_path):
    file, city, _, pois, extra = REAL_DATASETS[key]
    args = ["prepare", "--trajectories", shared_data / "cities" / file, "--city", city, "--out", tmp_path / key]
    if pois:
        args += ["--pois", shared_data / "pois" / pois]
    if not extra.get("weekday_reliable", True):
        args.append("--weekday-unreliable")
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((tmp_path / key / "meta.json").read_text())
    assert meta["n_users"] > 5 and meta["n_cells"] > 20 and meta["n_visits"]["test"] > 50


def test_pois_writes_the_base_map_of_the_same_osm_file(tmp_path, shared_data):
    from trajmoe.pois.basemap import read_basemap, read_basemap_geojson

    osm = shared_data / "pois" / "west_oakland.osm.bz2"
    proc = _cli("pois", "--osm", osm, "--out", tmp_path / "p.parquet", "--basemap", tmp_path / "b.geojson")
    assert proc.returncode == 0, proc.stderr
    written, direct = read_basemap_geojson(tmp_path / "b.geojson"), read_basemap(osm)
    assert len(written.streets) == len(direct.streets) > 20 and list(written.streets["name"]) == list(direct.streets["name"])
    assert "base map written to" in proc.stdout
    table = tmp_path / "t.csv"
    table.write_text("lat,lon,category\n37.81,-122.29,cafe\n")
    proc = _cli("pois", "--table", table, "--out", tmp_path / "q.parquet", "--basemap", tmp_path / "c.geojson")
    assert proc.returncode != 0 and "a POI table has no streets" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "q.parquet").exists()  # refused before anything is written
