"""The checkpoint sidecar's training record (one typed record, old ones migrated) and the checks of
its values on load: `trajmoe pretrain` lists exactly the folders it trained on, keyed by dataset,
reports the one it could not train on, and the app recognises the city it was pretrained on."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from trajmoe import cli
from trajmoe.city.data import CityData
from trajmoe.city.prepare import prepare
from trajmoe.errors import CheckpointError
from trajmoe.train.checkpoint import load_checkpoint, read_sidecar, save_checkpoint
from trajmoe.train.record import TrainingRecord

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "assets" / "trajmoe_pretrained.json"


def _rows(seed: int) -> str:
    """A small check-in file: 12 people, 15 visits each, around central Helsinki."""
    return "user_id,timestamp,lat,lon\n" + "\n".join(
        f"p{u},2021-03-{1 + v:02d}T{8 + v % 9:02d}:00:00,{60.15 + 0.004 * ((u * 7 + v * 3 + seed) % 11)},"
        f"{24.9 + 0.006 * ((u * 5 + v + seed) % 13)}" for u in range(12 + seed) for v in range(15)) + "\n"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Two datasets of ONE city (as New York Foursquare and Gowalla), and a folder without training visits."""
    root = tmp_path_factory.mktemp("sidecar")
    out = {}
    for name, seed in (("testville_foursquare", 0), ("testville_gowalla", 3)):
        (root / f"{name}.csv").write_text(_rows(seed))
        prepare(root / f"{name}.csv", city="Testville", out=root / name)
        out[name] = root / name
    empty = root / "empty"
    shutil.copytree(out["testville_gowalla"], empty)  # every visit moved out of the training split
    visits = pd.read_parquet(empty / "visits.parquet")
    visits["split"] = visits["split"].replace("train", "val")
    visits.to_parquet(empty / "visits.parquet")
    meta = json.loads((empty / "meta.json").read_text())
    meta["report"]["source"] = "empty.csv"
    (empty / "meta.json").write_text(json.dumps(meta))
    out["empty"] = empty
    return out


def _pretrain(folders, out: Path, *extra: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(["pretrain", "--data", *map(str, folders), "--out", str(out), "--d-model", "32", "--layers", "1",
                         "--batch-size", "8", *extra])
    return code, stdout.getvalue(), stderr.getvalue()


def test_pretrain_records_exactly_the_folders_trained_on_and_reports_the_skipped_one(folders, tmp_path):
    out = tmp_path / "pre.safetensors"
    code, stdout, stderr = _pretrain(folders.values(), out, "--max-steps", "3")
    assert code == 0, stderr
    meta = read_sidecar(out)
    record = TrainingRecord.of(meta)
    assert record.kind == "pretrain" and list(record.datasets) == ["testville_foursquare", "testville_gowalla"]
    for name in record.datasets:  # one city, two datasets, each with its own count
        assert record.datasets[name].city == "Testville" and record.datasets[name].kind == "checkins"
        assert record.datasets[name].train_visits == CityData(folders[name]).meta["n_visits"]["train"]
    assert record.datasets["testville_foursquare"].train_visits != record.datasets["testville_gowalla"].train_visits
    assert record.skipped == ["empty"] and "skipped empty (Testville): no training windows" in stderr
    assert meta["cities"] == ["Testville", "Testville"] and meta["domain_experts"] == ["Testville"]
    # the recipe is the shipped checkpoint's unless a flag says otherwise; final_loss = mean of the last steps
    assert (record.lr, record.warmup_steps, record.batch_size, record.steps) == (2e-3, 30, 8, 3)
    assert record.trained_tasks == ("next", "at-time") == tuple(meta["config"]["tasks"])
    assert "final loss" in stdout and "testville_foursquare (Testville" in stdout
    load_checkpoint(out)  # and it loads


def test_epochs_that_end_the_run_before_max_steps_are_said(folders, tmp_path):
    code, _, stderr = _pretrain([folders["testville_gowalla"]], tmp_path / "e.safetensors", "--max-steps", "500",
                                "--epochs", "1", "--task", "next")
    assert code == 0, stderr
    assert "--max-steps 500 asked, but 1 epoch(s)" in stderr and "Raise --epochs" in stderr
    record = TrainingRecord.of(read_sidecar(tmp_path / "e.safetensors"))
    assert record.steps < 500 and record.epochs == 1 and record.max_steps == 500


def test_the_cli_pretrain_defaults_are_the_shipped_recipe():
    from trajmoe.train.recipe import PRETRAIN

    args = cli.build_parser().parse_args(["pretrain", "--data", "x", "--out", "y.safetensors"])
    assert (args.lr, args.warmup, args.batch_size, args.max_steps, args.epochs) == (2e-3, 30, 32, 1600, None)
    assert (args.lr, args.warmup, args.batch_size, args.max_steps) == (PRETRAIN.lr, PRETRAIN.warmup_steps,
                                                                       PRETRAIN.batch_size, PRETRAIN.max_steps)
    shipped = TrainingRecord.of(json.loads(SHIPPED.read_text()))
    assert shipped.batch_size == PRETRAIN.batch_size and shipped.steps <= PRETRAIN.max_steps


def test_the_app_recognises_the_city_a_cli_checkpoint_was_pretrained_on(folders, tmp_path, app_sandbox):
    out = tmp_path / "pre.safetensors"
    code, _, stderr = _pretrain([folders["testville_foursquare"]], out, "--max-steps", "2", "--task", "next")
    assert code == 0, stderr
    with app_sandbox(tmp_path / "app"):
        from state.predictions import pretrained_on

        class Prep:  # what the app keeps of a prepared upload: its meta.json and report
            def __init__(self, folder: Path, city: str | None = None):
                self.meta = json.loads((folder / "meta.json").read_text())
                self.meta["city"] = city or self.meta["city"]
                self.report = self.meta["report"]

        meta = json.loads(out.with_suffix(".json").read_text())
        # the planner calls the same file another city name: the file's dataset still matches
        assert pretrained_on(meta, Prep(folders["testville_foursquare"], "Somewhere")) == "Testville (testville_foursquare)"
        assert pretrained_on(meta, Prep(folders["testville_gowalla"], "Elsewhere")) is None  # not trained on


def test_the_shipped_sidecar_loads_as_a_record_with_both_new_york_datasets():
    meta = json.loads(SHIPPED.read_text())
    record = TrainingRecord.of(meta)
    assert record.kind == "pretrain" and len(record.datasets) == 8
    assert record.datasets["nyc_foursquare"].city == record.datasets["nyc_gowalla"].city == "New York"
    # the old record kept visits by city name: New York's count cannot say which dataset it was
    assert record.datasets["nyc_foursquare"].train_visits is None is record.datasets["nyc_gowalla"].train_visits
    assert record.datasets["la_gowalla"].train_visits == meta["training"]["train_visits"]["Los Angeles"]
    assert record.trained_tasks == ("next", "at-time") and "checkins" in record.trained_kinds
    read_sidecar(SHIPPED)  # its values pass the load checks


def test_old_records_of_every_writer_migrate():
    cli_old = {"cities": ["Helsinki"], "training": {"kind": "pretrain", "data": ["helsinki"],
                                                     "train_visits": {"Helsinki": 120}, "final_loss": 2.5}}
    assert TrainingRecord.of(cli_old).datasets["helsinki"].train_visits == 120
    bench_old = {"cities": ["A", "B"], "training": {"kind": "pretrain", "sources": ["/x/a_gps", "b_trips"]}}
    assert list(TrainingRecord.of(bench_old).datasets) == ["a_gps", "b_trips"]
    tuned_old = {"training": {"kind": "finetune", "from": "base.safetensors", "city": "Lisbon", "subset": {"seed": 1}}}
    record = TrainingRecord.of(tuned_old)
    assert record.city == "Lisbon" and record.source == "base.safetensors" and record.subset == {"seed": 1}
    assert TrainingRecord.of({"cities": ["x"]}) is None and TrainingRecord.of({"training": "junk"}) is None
    odd = TrainingRecord.of({"training": {"kind": "pretrain", "steps": "many", "from": 3, "tasks": "next",
                                          "datasets": {"a": {"city": "A", "train_visits": "9"}, "b": 7}}})
    assert (odd.steps, odd.source, odd.tasks, list(odd.datasets), odd.datasets["a"].train_visits) == (0, None, (), ["a"], None)


@pytest.fixture(scope="module")
def good(tmp_path_factory, new_tiny) -> Path:
    model, config = new_tiny(d_model=16, n_layers=1, expert_hidden=16, n_routed_experts=2, top_k=1)
    return save_checkpoint(tmp_path_factory.mktemp("good") / "good.safetensors", model, arch="trajmoe", config=config)


@pytest.mark.parametrize("change, words", [
    ({"max_len": 10**12}, "max_len=1000000000000 is outside the sane range"),
    ({"d_model": "128"}, "d_model=\"128\" must be a whole number"),
    ({"n_heads": 0}, "n_heads=0 is outside"),
    ({"n_layers": 100_000}, "n_layers=100000 is outside"),
    ({"n_routed_experts": 2.5}, "must be a whole number"),
    ({"dropout": float("nan")}, "dropout=NaN is outside"),
    ({"moe": "yes"}, "moe=\"yes\" must be true or false"),
    ({"domain_experts": [1, 2]}, "domain_experts=[1, 2] must list names"),
    ({"feature_groups": {"poi_share": -3}}, "feature_groups"),
])
def test_sidecar_values_outside_sane_ranges_are_refused_in_words(tmp_path, good, change, words):
    meta = json.loads(good.with_suffix(".json").read_text())
    meta["config"].update(change)
    path = tmp_path / "edited.safetensors"
    path.write_bytes(good.read_bytes())
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert words in message and message.startswith("edited.safetensors: ") and "retrain" in message
    assert str(tmp_path) not in message and "\n" not in message


@pytest.mark.parametrize("meta_change, words", [
    ({"config": None}, "has no model config (the 'config' entry is missing)"),
    ({"config": [1, 2]}, "'config' entry is not a JSON object"),
    ({"arch": "lstm"}, "Unknown model architecture 'lstm'"),
])
def test_a_sidecar_without_a_usable_config_says_what_is_wrong(tmp_path, good, meta_change, words):
    meta = {k: v for k, v in json.loads(good.with_suffix(".json").read_text()).items()}
    meta.update(meta_change)
    meta = {k: v for k, v in meta.items() if v is not None}
    path = tmp_path / "odd.safetensors"
    path.write_bytes(good.read_bytes())
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="odd.safetensors") as err:
        load_checkpoint(path)
    assert words in str(err.value) and str(tmp_path) not in str(err.value)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert cli.main(["predict", "--checkpoint", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "p")]) == 2
    assert stderr.getvalue().count("\n") == 1 and words in stderr.getvalue()
