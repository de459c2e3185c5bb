"""The one run subset and the one fine-tune service (library, CLI), on the embedded default."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from tools.realdata import REPO_ROOT
from trajmoe.city.subset import run_subset
from trajmoe.errors import CheckpointError
from trajmoe.train.checkpoint import load_checkpoint, read_sidecar, save_checkpoint
from trajmoe.train.evaluate import evaluate
from trajmoe.train.finetune import finetune, visit_features
from trajmoe.train.fit import TrainConfig, fit

CFG = dict(fraction=0.05, epochs=1, seed=3, batch_size=8, eval_batch_size=512)


@pytest.fixture(scope="module")
def base(tmp_path_factory, new_tiny):
    model, config = new_tiny(n_layers=1)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "base.safetensors", model, arch="trajmoe", config=config,
                           info={"cities": ["Elsewhere"], "domain_experts": []})
    return path


def test_run_subset_is_seeded_and_its_features_come_from_its_windows(helsinki):
    a = run_subset(helsinki, fraction=0.05, seed=3)
    b = run_subset(helsinki, fraction=0.05, seed=3)
    other = run_subset(helsinki, fraction=0.05, seed=4)
    assert [list(w) for w in a.windows] == [list(w) for w in b.windows]
    assert np.array_equal(a.val_targets, b.val_targets)
    assert [list(w) for w in a.windows] != [list(w) for w in other.windows]
    every = helsinki.all_train_windows()
    assert len(a.windows) == round(0.05 * len(every))
    assert len(a.val_targets) == round(0.05 * len(helsinki.targets("val")))
    assert set(a.val_targets) <= set(helsinki.targets("val"))
    seen = helsinki.train_visits(a.windows)
    assert a.n_train_visits == len(seen) and (helsinki.split[seen] == 0).all()
    counts = np.bincount(helsinki.cell_idx[seen][helsinki.cell_idx[seen] >= 0], minlength=helsinki.n_cells)
    assert np.allclose(a.city.log_pop.numpy(), np.log1p(counts * len(counts) / counts.sum()))
    assert a.describe() == {"fraction": 0.05, "seed": 3, "max_len": 64, "train_windows": len(a.windows),
                            "train_visits": len(seen), "val_targets": len(a.val_targets)}


def test_fit_returns_the_subset_it_trained_and_validated_on(helsinki, new_tiny):
    model, _ = new_tiny(n_layers=1)
    res = fit(model, [helsinki], TrainConfig(max_steps=2, **CFG), val_city=helsinki)
    expected = run_subset(helsinki, fraction=0.05, seed=3)
    assert len(res.subsets) == 1 and res.val_subset is res.subsets[0]
    assert [list(w) for w in res.val_subset.windows] == [list(w) for w in expected.windows]
    assert np.array_equal(res.val_subset.val_targets, expected.val_targets)
    assert torch.equal(res.val_subset.city.features, expected.city.features)


def test_the_service_evaluates_on_its_own_subset_and_records_it(helsinki, base):
    model, meta = load_checkpoint(base)
    run = finetune(model, helsinki, TrainConfig(max_steps=3, **CFG), base_info=meta, source=base.name)
    assert run.train.steps == 3
    again = evaluate(run.model, helsinki, split="test", subset=run_subset(helsinki, fraction=0.05, seed=3))
    assert again == run.metrics
    training = run.record.to_json()  # the sidecar's training record
    assert training["subset"] == run.subset.describe() and training["seed"] == 3
    assert run.info["cities"] == ["Elsewhere", "Helsinki"]
    assert run.info["domain_experts"] == ["Helsinki"] == list(run.model.config.domain_experts)
    assert run.info["metrics"]["test"] == run.metrics


def test_visit_features_says_which_and_refuses_a_subset_it_cannot_rebuild(helsinki, base, tmp_path):
    model, meta = load_checkpoint(base)
    subset, sentence = visit_features(meta, helsinki, choice="all")
    assert subset is None and f"all {len(helsinki.train_visits(None)):,} training visits" in sentence
    with pytest.raises(CheckpointError, match="records no fine-tuning subset"):
        visit_features(meta, helsinki, choice="subset")
    run = finetune(copy.deepcopy(model), helsinki, TrainConfig(max_steps=1, **CFG), base_info=meta, source="base")
    path = run.save(tmp_path / "ft.safetensors", arch="trajmoe")
    sidecar = read_sidecar(path)
    subset, sentence = visit_features(sidecar, helsinki, choice="subset")
    assert subset.n_train_visits == run.subset.n_train_visits and "fine-tuning subset" in sentence
    lying = json.loads(json.dumps(sidecar))
    lying["training"]["subset"]["train_visits"] += 1  # a folder prepared differently
    with pytest.raises(CheckpointError, match="prepared differently"):
        visit_features(lying, helsinki, choice="subset")
    lying["training"]["city"] = "Lisbon"
    with pytest.raises(CheckpointError, match="not 'Helsinki'"):
        visit_features(lying, helsinki, choice="subset")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "trajmoe", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def _printed(stdout: str) -> dict[str, float]:
    """finetune's stdout: exactly its two test acc@1 lines -> {"subset features": x, "all training visits": y}."""
    lines = stdout.strip().splitlines()
    assert len(lines) == 2, stdout
    out = {}
    for line in lines:
        m = re.fullmatch(r"test acc@1 \((subset features|all training visits)\): (0\.\d{4}|1\.0000)", line)
        assert m, line
        out[m.group(1)] = float(m.group(2))
    return out


def test_cli_finetune_numbers_are_reproduced_by_evaluate(helsinki_folder, base, tmp_path):
    out = tmp_path / "ft.safetensors"
    proc = _cli("finetune", "--checkpoint", base, "--data", helsinki_folder, "--out", out, "--fraction", "0.05",
                "--seed", "3", "--max-steps", "2", "--batch-size", "8")
    assert proc.returncode == 0, proc.stderr
    printed = _printed(proc.stdout)
    assert "kept the" in proc.stderr  # which state was kept (the starting or the fine-tuned one) is said
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["training"]["subset"]["seed"] == 3 and sidecar["training"]["subset"]["fraction"] == 0.05
    assert sidecar["training"]["kept"] in ("starting", "fine-tuned")
    # no absolute path of this machine in the sidecar or the prepared folder it was made from
    sidecar_text = out.with_suffix(".json").read_text()
    assert sidecar["training"]["from"] == base.name and str(tmp_path) not in sidecar_text
    meta_text = (helsinki_folder / "meta.json").read_text()
    assert str(REPO_ROOT) not in meta_text and str(REPO_ROOT) not in sidecar_text
    proc = _cli("evaluate", "--checkpoint", out, "--data", helsinki_folder, "--json", tmp_path / "sub.json",
                "--features", "subset")
    assert proc.returncode == 0, proc.stderr
    assert "fine-tuning subset" in proc.stderr
    got = json.loads((tmp_path / "sub.json").read_text())
    assert got.pop("features") == "subset" and got.pop("task") == "next"
    assert got == sidecar["metrics"]["test"]  # finetune's number, exactly
    assert abs(got["acc@1"] - printed["subset features"]) <= 5e-5
    proc = _cli("evaluate", "--checkpoint", out, "--data", helsinki_folder, "--json", tmp_path / "all.json")
    assert proc.returncode == 0 and "Visit features: all" in proc.stderr and "fine-tuned on 'Helsinki'" in proc.stderr
    got = json.loads((tmp_path / "all.json").read_text())
    assert got.pop("features") == "all" and got.pop("task") == "next" and got == sidecar["metrics"]["test_all_visits"]
    assert abs(got["acc@1"] - printed["all training visits"]) <= 5e-5
    proc = _cli("evaluate", "--checkpoint", base, "--data", helsinki_folder, "--json", tmp_path / "x.json",
                "--features", "subset")
    assert proc.returncode == 2 and "records no fine-tuning subset" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def real_city(request, tmp_path_factory):
    from tools.realdata import prepare_real, shared_data_dir

    if shared_data_dir() is None:
        pytest.skip("../shared/data not found: the real Los Angeles / San Francisco files are needed")
    return prepare_real(request.param, tmp_path_factory.mktemp("real"))


@pytest.mark.parametrize("real_city", ["la_gowalla", "sf_gowalla"], indirect=True)
def test_finetune_prints_two_numbers_that_evaluate_reproduces_on_real_cities(real_city, tmp_path):
    """Issue 13: `finetune` prints exactly the two test Acc@1 lines; `evaluate --features subset`
    and `evaluate` (all training visits) each reproduce theirs within 0.002, on Los Angeles and San
    Francisco with the shipped checkpoint, 5%, 1 epoch, seed 0."""
    ckpt = REPO_ROOT / "assets" / "trajmoe_pretrained.safetensors"
    out = tmp_path / "ft.safetensors"
    proc = _cli("finetune", "--checkpoint", ckpt, "--data", real_city.folder, "--out", out, "--fraction", "0.05",
                "--epochs", "1", "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    printed = _printed(proc.stdout)
    for flag, line in (("subset", "subset features"), ("all", "all training visits")):
        proc = _cli("evaluate", "--checkpoint", out, "--data", real_city.folder, "--json", tmp_path / f"{flag}.json",
                    "--features", flag)
        assert proc.returncode == 0, proc.stderr
        got = json.loads((tmp_path / f"{flag}.json").read_text())
        assert abs(got["acc@1"] - printed[line]) <= 0.002, (flag, got["acc@1"], printed)
        assert got["returns"]["n"] + got["explorations"]["n"] == got["n"]
