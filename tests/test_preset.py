"""Fine-tuning presets (city, protocol) and the keep rule among three states (issue 26, items 1-2)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from trajmoe.city.tasks import TASKS
from trajmoe.errors import TrajMoEError
from trajmoe.train.checkpoint import load_checkpoint, read_sidecar, save_checkpoint
from trajmoe.train.finetune import finetune, preset_config
from trajmoe.train.fit import fit
from trajmoe.train.keep import KEEP_Z, Verdict
from trajmoe.train.recipe import CITY, PROTOCOL
from trajmoe.train.record import TrainingRecord


@pytest.fixture(scope="module")
def base(tmp_path_factory, new_tiny):
    model, config = new_tiny(n_layers=1)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "base.safetensors", model, arch="trajmoe",
                           config=config, info={"cities": ["Elsewhere"], "domain_experts": []})


def test_presets_and_overrides():
    city = preset_config("city")
    assert (city.fraction, city.tasks, city.max_seconds, city.epochs) == (1.0, TASKS, CITY.max_seconds, CITY.epochs)
    proto = preset_config("protocol", seed=4, fraction=None)  # None: the preset's value
    assert (proto.fraction, proto.epochs, proto.tasks, proto.seed) == (0.05, 1, ("next",), 4)
    assert PROTOCOL.lr == proto.lr
    assert preset_config("city", tasks=("at-time",), max_seconds=5.0).tasks == ("at-time",)
    with pytest.raises(TrajMoEError, match="city, protocol|protocol, city"):
        preset_config("fast")


def test_city_preset_trains_on_all_training_visits_and_stops_at_the_time_budget(small_helsinki, new_tiny):
    model, _ = new_tiny(n_layers=1)
    cfg = preset_config("city", max_seconds=1.0, epochs=100, patience=10**6, calibrate=False)
    seen, with_time = [], []
    res = fit(model, [small_helsinki], cfg, val_city=small_helsinki,
              progress=lambda step, total, loss, left: with_time.append((step, total, left)))
    assert len(res.subsets[0].windows) == len(small_helsinki.all_train_windows())  # fraction 1.0: every window
    assert res.steps < res.planned_steps  # the budget, not the 100 epochs, ended it
    lefts = [left for _, _, left in with_time]
    assert lefts[-1] == 0.0 and all(x > 0 for x in lefts[:-1]) and lefts == sorted(lefts, reverse=True)
    assert all(step <= total <= res.planned_steps for step, total, _ in with_time)
    assert with_time[-1][0] == with_time[-1][1] == res.steps  # the bar ends full
    model, _ = new_tiny(n_layers=1)  # a (step, total, loss) callback still works, without the seconds
    fit(model, [small_helsinki], preset_config("city", max_steps=3, calibrate=False), val_city=small_helsinki,
        progress=lambda step, total, loss: seen.append(step))
    assert seen == [1, 2, 3]


def test_keep_rule_picks_the_baseline_head_when_the_learned_terms_are_useless(small_helsinki, new_tiny):
    model, _ = new_tiny(n_layers=1, seed=5)
    with torch.no_grad():  # random learned terms, trusted strongly: noise on top of the prior terms
        for scale in model.head.scales:
            scale.fill_(5.0)
    cfg = preset_config("city", epochs=1, lr=1e-12, warmup_steps=0, calibrate=False, tasks=("next",))
    res = fit(model, [small_helsinki], cfg, val_city=small_helsinki)
    v = res.verdict
    assert res.kept == v.kept == "baseline", v
    assert set(v.val) == {"fine-tuned", "starting", "baseline"}
    assert v.z["fine-tuned"] > KEEP_Z and v.z["starting"] > KEEP_Z  # both learned states worse beyond noise
    assert all(float(s.detach().abs().sum()) == 0.0 for s in model.head.scales)  # the model is left in that state
    again = fit(model, [small_helsinki], preset_config("city", max_steps=1, lr=1e-12, calibrate=False,
                                                        tasks=("next",)), val_city=small_helsinki)
    assert again.start_val["acc@1"] == pytest.approx(v.val["baseline"]["acc@1"], abs=1e-4)  # it scores as recorded
    assert "simple baseline" in v.sentence()


def test_keep_rule_keeps_the_fine_tuned_state_when_fine_tuning_clearly_helps(small_helsinki, new_tiny):
    model, _ = new_tiny(n_layers=1)
    cfg = preset_config("city", max_seconds=None, epochs=6, lr=5e-3, tasks=("next",))
    res = fit(model, [small_helsinki], cfg, val_city=small_helsinki)
    v = res.verdict
    assert res.kept == v.kept == "fine-tuned", v
    assert v.z["starting"] > KEEP_Z  # better than the untrained start beyond noise
    assert v.z["baseline"] >= -KEEP_Z  # and not worse than the baseline beyond noise
    assert v.val["fine-tuned"]["acc@1"] > v.val["starting"]["acc@1"]


def test_the_verdict_is_recorded_in_the_sidecar_and_survives_save_and_load(small_helsinki, base, tmp_path):
    model, meta = load_checkpoint(base)
    run = finetune(model, small_helsinki, preset_config("city", max_steps=4), base_info=meta, source=str(base),
                   evaluate_test=False)
    assert run.verdict is not None and run.record.verdict == run.verdict.to_json()
    path = run.save(tmp_path / "tuned.safetensors", arch="trajmoe")
    sidecar = read_sidecar(path)
    assert sidecar["training"]["verdict"]["kept"] == run.train.kept
    record = TrainingRecord.of(sidecar)
    assert record.keep_verdict == run.verdict
    assert Verdict.from_json(json.loads(json.dumps(run.verdict.to_json()))) == run.verdict
    _, meta2 = load_checkpoint(path)
    assert TrainingRecord.of(meta2).keep_verdict == run.verdict
    old = json.loads(json.dumps(sidecar))  # a record written before the field still loads
    del old["training"]["verdict"]
    assert TrainingRecord.of(old).keep_verdict is None and TrainingRecord.of(old).kept == run.train.kept


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "trajmoe", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_cli_preset(small_helsinki, base, tmp_path):
    out = tmp_path / "city.safetensors"
    done = _cli("finetune", "--checkpoint", base, "--data", small_helsinki.folder, "--out", out, "--preset", "city",
                "--max-seconds", 2, "--epochs", 2)
    assert done.returncode == 0, done.stderr
    assert "(city preset) on 100% of Helsinki" in done.stderr and "Kept the " in done.stderr
    training = read_sidecar(out)["training"]
    assert training["fraction"] == 1.0 and training["tasks"] == list(TASKS) and training["epochs"] == 2
    assert training["verdict"]["kept"] == training["kept"]
    out = tmp_path / "protocol.safetensors"
    done = _cli("finetune", "--checkpoint", base, "--data", small_helsinki.folder, "--out", out,
                "--fraction", 0.5)  # the default preset is protocol; the flag overrides its 5%
    assert done.returncode == 0, done.stderr
    assert "(protocol preset) on 50% of Helsinki" in done.stderr
    training = read_sidecar(out)["training"]
    assert training["fraction"] == 0.5 and training["tasks"] == ["next"] and training["epochs"] == 1
    help_ = _cli("finetune", "--help").stdout
    assert "--preset {protocol,city}" in help_ and "benchmark numbers do not move" in " ".join(help_.split())
