"""--device / --precision: one-line errors where a device is missing, CPU works everywhere, the GPU check skips."""

import copy
import json
import subprocess
import sys

import pytest
import torch

from trajmoe import cli
from trajmoe.errors import TrajMoEError
from trajmoe.train import device as device_mod
from trajmoe.train.checkpoint import save_checkpoint
from trajmoe.train.device import autocast, model_device, resolve_device
from trajmoe.train.distributed import rank_device
from trajmoe.train.fit import TrainConfig, fit
from trajmoe.train.runner import run_baseline

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "trajmoe", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _one_line_error(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@NO_CUDA
def test_resolve_device_cuda_missing_is_one_line_naming_the_fix():
    with pytest.raises(TrajMoEError, match="--device cpu") as exc:
        resolve_device("cuda")
    assert "\n" not in str(exc.value)


@pytest.mark.skipif(bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
                    reason="this machine has MPS")
def test_resolve_device_mps_missing_is_one_line_naming_the_fix():
    with pytest.raises(TrajMoEError, match="--device cpu") as exc:
        resolve_device("mps")
    assert "\n" not in str(exc.value)


def test_resolve_device_unknown_name():
    with pytest.raises(TrajMoEError, match="auto, cpu, cuda, mps"):
        resolve_device("tpu")


def test_autocast_bf16_refused_off_cuda_fp32_is_a_no_op():
    with pytest.raises(TrajMoEError, match="CUDA only"):
        autocast(torch.device("cpu"), "bf16")
    with pytest.raises(TrajMoEError, match="fp32, bf16"):
        autocast(torch.device("cpu"), "fp16")
    with autocast(torch.device("cpu"), "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(TrajMoEError, match="precision"):
        TrainConfig(precision="fp16")


def test_cli_flag_choices_match_device_module():
    parser = cli.build_parser()
    choices = {a.dest: tuple(a.choices) for a in parser._actions if a.dest in ("device", "precision")}
    assert choices == {"device": tuple(device_mod.DEVICES), "precision": tuple(device_mod.PRECISIONS)}
    args = parser.parse_args(["evaluate", "--checkpoint", "c", "--data", "d", "--json", "j"])
    assert (args.device, args.precision) == ("auto", "fp32")


def test_rank_device_under_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert rank_device("cpu") == torch.device("cpu")
    assert rank_device("cuda") == torch.device("cuda")
    assert rank_device(None) == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_device("cuda") == torch.device("cuda", 1)  # one GPU per rank
    assert rank_device("cpu") == torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, tiny_model, arch="trajmoe", config=tiny_model.config,
                           info={"cities": [], "domain_experts": []})


@NO_CUDA
def test_cli_device_cuda_without_cuda_exits_2_with_one_line(helsinki_folder, tiny_checkpoint, tmp_path):
    proc = _cli("--device", "cuda", "evaluate", "--checkpoint", tiny_checkpoint, "--data", helsinki_folder,
                "--json", tmp_path / "m.json")
    line = _one_line_error(proc)
    assert "--device cpu" in line and "CUDA" in line
    assert not (tmp_path / "m.json").exists()


def test_cli_bf16_off_cuda_exits_2_with_one_line(helsinki_folder, tmp_path):
    proc = _cli("--device", "cpu", "--precision", "bf16", "baseline", "--model", "popular", "--data",
                helsinki_folder, "--json", tmp_path / "m.json")
    assert "--precision fp32" in _one_line_error(proc)


def test_cli_device_cpu_baseline_works(helsinki_folder, tmp_path):
    proc = _cli("--device", "cpu", "baseline", "--model", "popular", "--data", helsinki_folder,
                "--json", tmp_path / "m.json")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert 0 < metrics["acc@1"] < 1 and metrics["steps"] == 0


def test_data_verbs_ignore_device(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,timestamp,lat,lon\na,2024-01-01T08:00:00,60.1,24.9\n")
    proc = _cli("--device", "cuda", "validate", bad)
    assert "--device" not in proc.stderr and "Traceback" not in proc.stderr


@NO_CUDA
def test_gpu_check_skips_cleanly_without_gpu(repo_root):
    proc = subprocess.run([sys.executable, str(repo_root / "bench" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=300, cwd=repo_root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == ["gpu_check: skipped: no CUDA GPU here (torch.cuda.is_available() is False)."]


def test_fit_on_the_device_of_the_parameters(helsinki, tiny_model):
    model = copy.deepcopy(tiny_model).to(resolve_device("cpu"))
    res = fit(model, [helsinki], TrainConfig(max_steps=2, batch_size=8, fraction=0.05, precision="fp32"),
              val_city=helsinki)
    assert res.steps == 2 and all(torch.isfinite(torch.tensor(res.losses)))
    assert model_device(model) == torch.device("cpu")
    with pytest.raises(TrajMoEError, match="CUDA only"):  # refused before any step
        fit(model, [helsinki], TrainConfig(max_steps=1, batch_size=8, fraction=0.05, precision="bf16"))


def test_run_baseline_neural_on_device_count_models_on_cpu(helsinki):
    cfg = TrainConfig(max_steps=1, batch_size=8, calibrate=False)
    gru = run_baseline("gru", helsinki, fraction=0.05, train_config=cfg, device="cpu")
    assert gru["steps"] == 1 and 0 <= gru["acc@1"] <= 1
    markov = run_baseline("markov", helsinki, fraction=0.05, train_config=cfg, device=torch.device("cpu"))
    assert markov["steps"] == 0
