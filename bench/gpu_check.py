"""CPU and GPU agree, and how much faster the GPU is (team issue "Speed and scale", item 2).

Fine-tunes the shipped checkpoint for 1 epoch on 5% of ``la_gowalla`` (the settings of
bench/speed.py, same seed) on the CPU, on CUDA in fp32 and on CUDA with bf16 autocast, evaluates
each on the test targets on its own device, and checks:

* same model, both devices: the CPU-tuned model's test scores on CUDA match its CPU scores
  (allclose, atol = rtol = 1e-3, on at least 99.5% of the targets: a router near a tie may pick
  another expert for a token) and its Acc@1 differs by at most 0.002;
* same training, both devices: the CUDA fp32 run's test Acc@1 and MRR are within 0.005 of the CPU
  run's (dropout off in all runs here, so the two devices do the same arithmetic: with dropout on
  they would draw different masks from their own generators);
* bf16 autocast: its Acc@1 within 0.02 of the CPU fp32 run (bf16 keeps 8 mantissa bits);
* a checkpoint saved from the GPU loads back with exactly the GPU model's weights.

Prints the speed-up of fine-tuning and of evaluation and writes bench/results/gpu_check.md.
On a machine without a CUDA GPU it prints one line and exits 0. Exit 1 when a check fails.

    python bench/gpu_check.py [--city la_gowalla | --data PREPARED_FOLDER] [--threads N]
    python bench/gpu_check.py --device cpu   # self-test of the script without a GPU (CPU vs CPU)
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

import numpy as np
import torch

from tools.realdata import REAL_DATASETS, REPO_ROOT, prepare_real
from trajmoe.city.data import CityData
from trajmoe.errors import TrajMoEError
from trajmoe.train.checkpoint import load_checkpoint, save_checkpoint
from trajmoe.train.device import resolve_device_or_exit
from trajmoe.train.evaluate import evaluate, iter_scores
from trajmoe.train.fit import TrainConfig, fit

CKPT = REPO_ROOT / "assets" / "trajmoe_pretrained.safetensors"
CACHE = REPO_ROOT / "bench" / "results" / "cache" / "prepared"
OUT = REPO_ROOT / "bench" / "results" / "gpu_check.md"

SCORE_TOL = 1e-3  # atol = rtol of the same model's scores on both devices
SCORE_ROWS = 0.995  # share of targets whose score rows must be allclose
SAME_MODEL_ACC = 0.002  # |delta Acc@1| of the same model on both devices
SAME_TRAINING = 0.005  # |delta Acc@1|, |delta MRR| of CPU vs CUDA fine-tuning, fp32
BF16_ACC = 0.02  # |delta Acc@1| of bf16-autocast fine-tuning vs CPU fp32


def train_config(precision: str = "fp32") -> TrainConfig:
    return TrainConfig(fraction=0.05, epochs=1, batch_size=8, lr=1e-3, warmup_steps=1, seed=0, precision=precision)


def no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Dropout off everywhere (modules and the attention's float rate), so both devices train alike."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        elif isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.0
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tuned(ckpt: Path, data: CityData, device: torch.device, precision: str = "fp32") -> tuple[torch.nn.Module, dict]:
    """Checkpoint ``ckpt`` fine-tuned on ``device``; returns (model, its run's numbers)."""
    model, _ = load_checkpoint(ckpt)
    no_dropout(model).to(device)
    torch.manual_seed(0)
    sync(device)
    t0 = time.perf_counter()
    res = fit(model, [data], train_config(precision), val_city=data)
    sync(device)
    ft_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = evaluate(model, data, split="test", subset=res.val_subset)
    sync(device)
    return model, {"device": str(device), "precision": precision, "steps": res.steps, "finetune_s": ft_s,
                   "eval_s": time.perf_counter() - t0, "metrics": metrics, "subset": res.val_subset}


def warm_up(ckpt: Path, data: CityData, device: torch.device) -> None:
    """CUDA context, cuBLAS handles and kernels are set up once: keep that out of the timings."""
    if device.type != "cuda":
        return
    model, _ = load_checkpoint(ckpt)
    model.to(device)
    fit(model, [data], TrainConfig(fraction=0.05, max_steps=2, batch_size=8, calibrate=False))
    evaluate(model, data, split="test")
    fit(model, [data], TrainConfig(fraction=0.05, max_steps=2, batch_size=8, calibrate=False, precision="bf16"))
    sync(device)


def scores_on(model: torch.nn.Module, data: CityData, city, device: torch.device) -> torch.Tensor:
    """(targets, N) float32 test scores (on the CPU, in target order) of a copy of ``model`` on ``device``,
    from the evaluation's own scoring path."""
    chunks = list(iter_scores(copy.deepcopy(model).to(device), data, data.targets("test"), city=city))
    order = torch.from_numpy(np.argsort(np.concatenate([t for t, _, _ in chunks]), kind="stable"))
    return torch.cat([s for _, s, _ in chunks])[order]


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--city", default="la_gowalla", choices=list(REAL_DATASETS),
                   help="real dataset prepared (or reused) from ../shared/data")
    p.add_argument("--data", type=Path, help="a prepared city folder instead of --city")
    p.add_argument("--checkpoint", type=Path, default=CKPT, help="checkpoint to fine-tune (default: the shipped one)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch CPU threads (default: all cores)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="the device compared with the CPU (default cuda; cpu = a self-test of this script)")
    p.add_argument("--out", type=Path, help=f"report file (default {OUT.relative_to(REPO_ROOT)} for a GPU run; "
                                             "the CPU self-test writes none unless given)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: skipped: no CUDA GPU here (torch.cuda.is_available() is False).")
        return 0
    device = resolve_device_or_exit(args.device)
    torch.set_num_threads(args.threads)
    try:
        arch = load_checkpoint(args.checkpoint)[1]["arch"]
        data = CityData(args.data) if args.data else prepare_real(args.city, CACHE)
    except (FileNotFoundError, TrajMoEError) as exc:
        print(f"error: gpu_check needs a loadable checkpoint and a prepared city: {exc}", file=sys.stderr)
        return 2
    cpu = torch.device("cpu")

    warm_up(args.checkpoint, data, device)
    cpu_model, cpu_run = tuned(args.checkpoint, data, cpu)
    dev_model, dev_run = tuned(args.checkpoint, data, device)
    runs = [cpu_run, dev_run]
    if device.type == "cuda":
        runs.append(tuned(args.checkpoint, data, device, "bf16")[1])

    checks = []  # (what, passed, detail)
    city = cpu_run["subset"].city
    s_cpu, s_dev = scores_on(cpu_model, data, city, cpu), scores_on(cpu_model, data, city, device)
    rows_ok = torch.isclose(s_dev, s_cpu, atol=SCORE_TOL, rtol=SCORE_TOL).all(dim=1).float().mean().item()
    checks.append((f"same model, scores on {device} vs cpu allclose (atol = rtol = {SCORE_TOL:g}) on >= "
                   f"{SCORE_ROWS:.1%} of targets", rows_ok >= SCORE_ROWS,
                   f"{rows_ok:.2%} of {len(s_cpu)} rows; largest difference {(s_dev - s_cpu).abs().max().item():.2e}"))
    moved = copy.deepcopy(cpu_model).to(device)
    acc_moved = evaluate(moved, data, split="test", subset=cpu_run["subset"])["acc@1"]
    d = abs(acc_moved - cpu_run["metrics"]["acc@1"])
    checks.append((f"same model on {device} vs cpu, Acc@1 apart by <= {SAME_MODEL_ACC}", d <= SAME_MODEL_ACC,
                   f"{acc_moved:.4f} vs {cpu_run['metrics']['acc@1']:.4f}"))
    for key in ("acc@1", "mrr"):
        d = abs(dev_run["metrics"][key] - cpu_run["metrics"][key])
        checks.append((f"fine-tuned on {device} vs cpu (fp32), {key} apart by <= {SAME_TRAINING}", d <= SAME_TRAINING,
                       f"{dev_run['metrics'][key]:.4f} vs {cpu_run['metrics'][key]:.4f}"))
    if len(runs) == 3:
        d = abs(runs[2]["metrics"]["acc@1"] - cpu_run["metrics"]["acc@1"])
        checks.append((f"fine-tuned with bf16 autocast vs cpu fp32, Acc@1 apart by <= {BF16_ACC}", d <= BF16_ACC,
                       f"{runs[2]['metrics']['acc@1']:.4f} vs {cpu_run['metrics']['acc@1']:.4f}"))
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "gpu.safetensors", dev_model, arch=arch, config=dev_model.config,
                               info={"cities": [data.name], "domain_experts": dev_model.domain_expert_names()})
        loaded, _ = load_checkpoint(path)
        checks.append((f"checkpoint saved from {device} loads back with the same weights", same_state(loaded, dev_model),
                       "state dicts equal"))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    base = cpu_run
    lines = ["# CPU vs GPU check", "",
             f"{data.name} ({data.n_cells} candidate cells, {base['metrics']['n']} test targets); {args.checkpoint.name} "
             "fine-tuned 1 epoch on 5% (batch 8, lr 1e-3, seed 0, dropout off), validation and head calibration "
             "included; then evaluated on its own device.",
             f"Device: {device} ({name}); CPU: {args.threads} torch thread(s) of {os.cpu_count()} cores; "
             f"torch {torch.__version__}. GPU timings exclude a warm-up run (CUDA context, kernels).", "",
             "| run | fine-tune steps | fine-tune s | speed-up | evaluation s | speed-up | test Acc@1 | MRR |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['device']} {r['precision']} | {r['steps']} | {r['finetune_s']:.2f} | "
                     f"{base['finetune_s'] / r['finetune_s']:.2f}x | {r['eval_s']:.2f} | {base['eval_s'] / r['eval_s']:.2f}x | "
                     f"{r['metrics']['acc@1']:.4f} | {r['metrics']['mrr']:.4f} |")
    lines += ["", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {what} | {'pass' if ok else 'FAIL'} | {detail} |" for what, ok, detail in checks]
    ok = all(c[1] for c in checks)
    lines += ["", f"All checks {'passed' if ok else 'did NOT pass'}. Re-run: `python bench/gpu_check.py` "
              "(skips with one line where there is no CUDA GPU).", ""]
    text = "\n".join(lines)
    out = args.out or (OUT if device.type == "cuda" else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
