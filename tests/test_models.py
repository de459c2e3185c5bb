"""The model factory: new models by architecture, and exact rebuilds from checkpoints."""

import dataclasses

import pytest
import torch

from trajmoe.errors import CheckpointError, TrajMoEError
from trajmoe.model.config import TrajMoEConfig
from trajmoe.model.moe import DenseFFN, SAMoE
from trajmoe.model.trajmoe import TrajMoE
from trajmoe.train.checkpoint import load_checkpoint, read_sidecar, save_checkpoint
from trajmoe.train.gru import GRUConfig, GRUNextLocation
from trajmoe.train.models import ARCHS, build_model, new_model, new_trajmoe

TINY = {"trajmoe": dict(d_model=16, n_layers=1, n_heads=2), "transformer": dict(d_model=16, n_layers=1, n_heads=2),
        "gru": dict(d_model=16)}


@pytest.fixture(scope="module")
def data(helsinki):
    return helsinki


def test_new_trajmoe_defaults_and_seed():
    model, config = new_trajmoe(seed=4)
    assert isinstance(model, TrajMoE) and isinstance(config, TrajMoEConfig)
    assert (config.d_model, config.n_layers, config.moe) == (128, 2, True)
    again, _ = new_trajmoe(seed=4)
    other, _ = new_trajmoe(seed=5)
    a, b, c = model.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_transformer_is_trajmoe_without_moe_of_the_same_width_and_depth():
    moe, moe_cfg = new_model("trajmoe", d_model=32, n_layers=3, n_heads=2)
    dense, dense_cfg = new_model("transformer", d_model=32, n_layers=3, n_heads=2)
    assert isinstance(dense, TrajMoE) and dense_cfg.moe is False
    assert dataclasses.replace(dense_cfg, moe=True) == moe_cfg  # the only difference
    assert all(isinstance(b.ffn, DenseFFN) for b in dense.blocks)
    assert all(isinstance(b.ffn, SAMoE) for b in moe.blocks)
    with pytest.raises(TrajMoEError, match="moe=False"):
        new_model("transformer", moe=True)


def test_new_model_errors_name_the_fix():
    with pytest.raises(TrajMoEError, match="trajmoe, transformer, gru"):
        new_model("lstm")
    with pytest.raises(TrajMoEError, match="d_model"):
        new_model("gru", width=3)


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip_gives_identical_scores(arch, data, tmp_path):
    model, config = new_model(arch, seed=1, **TINY[arch])
    cities = []
    if arch != "gru":  # a fine-tuned city's domain expert must come back too
        model.add_domain_expert(data.name)
        cities = [data.name]
        with torch.no_grad():  # make it matter: a fresh domain expert is a no-op
            for block in model.blocks:
                for p in block.ffn.domain_experts.parameters():
                    p.normal_(0, 0.1)
    path = save_checkpoint(tmp_path / f"{arch}.safetensors", model, arch=arch, config=config,
                           info={"domain_experts": cities})
    loaded, meta = load_checkpoint(path)
    assert type(loaded) is type(model) and meta["arch"] == arch
    model.eval()
    city = data.city_tensors()
    batch = data.eval_batch(data.targets("test")[:20])
    torch.testing.assert_close(loaded.score_last(batch, city), model.score_last(batch, city), rtol=0, atol=0)
    # rebuilt from the sidecar alone: same shapes, strict load
    rebuilt = build_model(arch, read_sidecar(path)["config"], cities=cities)
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_build_model_refuses_inconsistent_sidecars():
    _, config = new_model("gru", d_model=8)
    cfg = dataclasses.asdict(config)
    assert isinstance(build_model("gru", cfg), GRUNextLocation)
    with pytest.raises(CheckpointError, match="does not know"):
        build_model("gru", {**cfg, "n_experts": 3})
    _, tcfg = new_model("trajmoe", **TINY["trajmoe"])
    with pytest.raises(CheckpointError, match="moe=False"):
        build_model("transformer", dataclasses.asdict(tcfg))
    with pytest.raises(TrajMoEError, match="Unknown model architecture"):
        build_model("lstm", {})


def test_gru_config_validates():
    with pytest.raises(TrajMoEError, match="dropout"):
        GRUConfig(dropout=1.5)
    with pytest.raises(TrajMoEError, match="d_model"):
        GRUConfig(d_model=0)
