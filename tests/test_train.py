"""Training loop, checkpoints and torchrun scale-out on a small prepared city."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trajmoe.city.data import CityData
from trajmoe.city.subset import run_subset
from trajmoe.errors import CheckpointError
from trajmoe.train.checkpoint import load_checkpoint, save_checkpoint
from trajmoe.train.evaluate import evaluate
from trajmoe.train.fit import TrainConfig, fit
from trajmoe.train.record import training_record

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_city(helsinki_folder):
    return helsinki_folder


def test_fit_reduces_loss_and_beats_untrained(small_city, new_tiny):
    torch.manual_seed(0)
    data = CityData(small_city)
    few = run_subset(data, fraction=0.2, seed=0)  # 20% of the windows and of the validation targets keeps this fast
    model, _ = new_tiny(n_layers=1, seed=0)
    before = evaluate(model, data, split="val", subset=few)
    res = fit(model, [data], TrainConfig(max_steps=30, batch_size=16, epochs=10, lr=3e-3, fraction=0.2),
              val_city=data)
    assert np.mean(res.losses[-5:]) < np.mean(res.losses[:5])
    after = evaluate(model, data, split="val", subset=few)
    assert after["mrr"] > before["mrr"]


def test_light_mode_trains_only_domain_router_head(small_city, new_tiny):
    data = CityData(small_city)
    model, _ = new_tiny(n_layers=1, seed=0)
    enc = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("encoder.")}
    fit(model, [data], TrainConfig(max_steps=3, batch_size=8, mode="light", fraction=0.2))
    after = model.state_dict()
    assert all(torch.equal(enc[k], after[k]) for k in enc)
    assert any("domain" in k for k in after)


def test_checkpoint_round_trip_is_exact(small_city, tmp_path, new_tiny):
    data = CityData(small_city)
    model, config = new_tiny(n_layers=1, seed=1)
    fit(model, [data], TrainConfig(max_steps=2, batch_size=8))
    path = save_checkpoint(tmp_path / "m.safetensors", model, arch="trajmoe", config=config,
                           info={"cities": ["Helsinki"], "domain_experts": model.domain_expert_names()})
    loaded, meta = load_checkpoint(path)
    city = data.city_tensors()
    batch = data.eval_batch(data.targets("test")[:20])
    model.eval()
    assert torch.equal(model.score_last(batch, city), loaded.score_last(batch, city))
    assert meta["cities"] == ["Helsinki"]


def test_bad_checkpoints_are_refused(tmp_path, new_tiny):
    model, config = new_tiny(n_layers=1)
    good = save_checkpoint(tmp_path / "good.safetensors", model, arch="trajmoe", config=config)
    raw = good.read_bytes()
    cases = {
        "empty": b"",
        "truncated": raw[: len(raw) // 2],
        "random": os.urandom(4096),
        "pickle": b"\x80\x04\x95" + os.urandom(64),
    }
    for name, content in cases.items():
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(content)
        (tmp_path / f"{name}.json").write_text(good.with_suffix(".json").read_text())
        with pytest.raises(CheckpointError, match=name):
            load_checkpoint(p)
    (tmp_path / "nosidecar.safetensors").write_bytes(raw)
    with pytest.raises(CheckpointError, match="sidecar"):
        load_checkpoint(tmp_path / "nosidecar.safetensors")
    side = json.loads(good.with_suffix(".json").read_text())
    side["feature_schema"] = "something-else"
    (tmp_path / "schema.safetensors").write_bytes(raw)
    (tmp_path / "schema.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="schema"):
        load_checkpoint(tmp_path / "schema.safetensors")


def _run(cmd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO, **kw)


def _losses(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("LOSSES ")][0]
    return json.loads(line[len("LOSSES "):])


@pytest.mark.slow  # two torchrun processes: ~10 s; `make test-all` runs it
def test_two_rank_torchrun_loss_equals_one_rank(small_city):
    worker = str(REPO / "tests" / "ddp_worker.py")
    one = _losses(_run([sys.executable, worker, str(small_city)]))
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    two = _losses(_run([torchrun, "--standalone", "--nproc-per-node", "2", worker, str(small_city)]))
    assert len(one) == len(two) == 4
    assert np.allclose(one, two, rtol=1e-4, atol=1e-5), (one, two)


@pytest.mark.slow  # two torchrun processes: ~9 s; `make test-all` runs it
def test_cli_pretrain_under_torchrun_finishes(small_city, tmp_path):
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    out = tmp_path / "ddp.safetensors"
    proc = _run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "trajmoe", "pretrain", "--data",
                 str(small_city), "--out", str(out), "--max-steps", "3", "--d-model", "32", "--batch-size", "8"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["training"]["world_size"] == 2 and meta["training"]["steps"] == 3


def test_few_shot_fit_uses_the_subset(small_city, new_tiny):
    data = CityData(small_city)
    model, _ = new_tiny(n_layers=1)
    res = fit(model, [data], TrainConfig(fraction=0.05, epochs=1, batch_size=8))
    n = len(run_subset(data, fraction=0.05, seed=0).windows)
    assert res.steps == -(-n // 8)


def test_head_calibration_prior_limits_how_far_few_targets_move_the_weights(small_city, new_tiny):
    from trajmoe.train.calibration import calibrate_head

    data = CityData(small_city)
    few = run_subset(data, fraction=0.05, seed=0)
    targets = few.val_targets[:40]  # a small validation share, as for a 5% city
    city = few.city
    moved = {}
    for strength in (0.0, 100.0, 1e6):
        model, _ = new_tiny(n_layers=1, seed=0)
        start = model.head.prior.detach().clone()
        res = calibrate_head(model, data, city, targets, prior_targets=strength)
        assert res["targets"] == 40
        if strength == 0.0:  # plain maximum likelihood never ends worse on its own targets
            assert res["nll_after"] < res["nll_before"]
        moved[strength] = float((model.head.prior.detach() - start).norm())
        other = [i for i in range(start.shape[0]) if i != 0]  # only the city's kind (check-ins) row moves
        assert torch.equal(model.head.prior.detach()[other], start[other])
    assert moved[0.0] > moved[100.0] > moved[1e6] and moved[1e6] < 1e-2


def test_fit_records_the_kinds_it_trained_and_old_sidecars_trust_every_kind(small_city, new_tiny):
    from trajmoe.train.models import build_model
    from trajmoe.trajectories.kinds import KINDS

    data = CityData(small_city)
    model, config = new_tiny(n_layers=1, seed=0)
    assert config.pretrained_kinds == ()
    res = fit(model, [data], TrainConfig(max_steps=2, batch_size=8, fraction=0.2), val_city=data)
    assert res.trained_kinds == (data.kind,) == ("checkins",) and res.trained_tasks == ("next",)
    assert model.config.pretrained_kinds == () and model.config.tasks == ()  # fit returns them, the config is not written
    assert res.calibration["targets"] > 0
    # A sidecar written before the field existed: every kind's row counts as trained.
    old = {k: v for k, v in dataclasses.asdict(config).items() if k != "pretrained_kinds"}
    assert build_model("trajmoe", old).config.pretrained_kinds == KINDS


def test_calibration_prior_applies_only_to_a_kind_trained_before(small_city, monkeypatch, tmp_path, new_tiny):
    import trajmoe.train.fit as train_module

    data = CityData(small_city)
    seen = []
    real = train_module.calibrate_head
    monkeypatch.setattr(train_module, "calibrate_head",
                        lambda *a, **kw: seen.append(kw["prior_targets"]) or real(*a, **kw))
    model, config = new_tiny(n_layers=1, seed=0)
    cfg = TrainConfig(max_steps=2, batch_size=8, fraction=0.2, calibration_prior=100.0)
    first = fit(model, [data], cfg, val_city=data)  # first time this kind is trained: no prior to pull toward
    fit(model, [data], cfg, val_city=data, kinds_before=first.trained_kinds)  # now the check-in row holds trained weights
    # the same through a checkpoint: its record puts the kinds in the config the loaded model reads
    path = save_checkpoint(tmp_path / "k.safetensors", model, arch="trajmoe", config=config,
                           info={"domain_experts": model.domain_expert_names()},
                           record=training_record("pretrain", first, cfg))
    loaded, _ = load_checkpoint(path)
    assert loaded.config.pretrained_kinds == ("checkins",)
    fit(loaded, [data], cfg, val_city=data)
    # each fit calibrates twice with the same prior: the kept state, then the simple baseline inside
    # the model (the keep rule's third state, train.keep)
    assert seen == [0.0, 0.0, 100.0, 100.0, 100.0, 100.0]


def test_a_state_is_set_aside_only_when_the_share_shows_it_worse_beyond_noise():
    from trajmoe.train.keep import worse_beyond_noise

    rng = np.random.default_rng(0)
    earlier = 1.0 / rng.integers(1, 50, 400)
    assert not worse_beyond_noise(earlier, earlier)  # the same ranks: keep the later state
    much_worse = earlier * 0.5
    assert worse_beyond_noise(much_worse, earlier)
    # on a 43-target share one target ranked lower is noise, not evidence
    small = earlier[:43].copy()
    later = small.copy()
    later[0] = 0.0
    assert not worse_beyond_noise(later, small)
    # the same drop on every target of a large share is evidence
    assert worse_beyond_noise(earlier - 0.01, earlier)
    assert not worse_beyond_noise(earlier + 0.01, earlier)  # better is never set aside


def test_fine_tuning_that_ruins_the_model_keeps_the_starting_state(small_helsinki, new_tiny):
    """A destructive learning rate makes every epoch worse beyond noise on the validation share:
    fit ends with exactly the weights it started from and says so."""
    import copy

    model, _ = new_tiny(n_layers=1, seed=0)
    # trained enough to beat the simple baseline inside it (the keep rule's third state) on the share
    fit(model, [small_helsinki], TrainConfig(epochs=12, max_steps=60, batch_size=16, calibrate=False))
    start = copy.deepcopy(model.state_dict())
    res = fit(model, [small_helsinki], TrainConfig(fraction=0.5, epochs=1, lr=50.0, warmup_steps=1, grad_clip=0.0,
                                                   calibrate=False), val_city=small_helsinki)
    assert res.kept == "starting" and res.best_epoch == -1
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    assert res.val[0]["acc@1"] < res.start_val["acc@1"]
