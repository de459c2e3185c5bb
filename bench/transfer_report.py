"""The transfer benchmark's report: cached runs -> one row per (target, method), the Markdown tables
with their goal checks, and the bar chart (bench/results/transfer.md, transfer.json, transfer.png).

Every number is computed from the run files (bench/transfer_cache.py), never typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.transfer_cache import AT_TIME, FORMAT4_VERSION, method_version, read_runs
from bench.transfer_runs import (
    ABLATIONS,
    CHECKIN_TARGETS,
    DEFAULT_PRETRAIN_STEPS,
    FEW,
    LONG_PRETRAIN_STEPS,
    OTHER_KINDS,
    SCRATCH,
    TIME_BLIND,
)
from trajmoe.city.data import DEFAULT_MAX_LEN

METHOD_LABELS = [
    ("trajmoe_pretrained_ft1", 0.05, "TrajMoE pretrained, fine-tuned 1 epoch on 5%"),
    ("trajmoe_zero_shot", 0.05, "TrajMoE zero-shot (pretrained, no fine-tuning)"),
    ("transformer_pretrained_ft1", 0.05, "Dense Transformer pretrained, fine-tuned 1 epoch on 5%"),
    (f"trajmoe_pretrained_ft1_{LONG_PRETRAIN_STEPS}", 0.05, f"TrajMoE pretrained {LONG_PRETRAIN_STEPS} steps, fine-tuned 1 epoch on 5%"),
    (f"trajmoe_zero_shot_{LONG_PRETRAIN_STEPS}", 0.05, f"TrajMoE pretrained {LONG_PRETRAIN_STEPS} steps, zero-shot"),
    (f"transformer_pretrained_ft1_{LONG_PRETRAIN_STEPS}", 0.05, f"Dense Transformer pretrained {LONG_PRETRAIN_STEPS} steps, fine-tuned 1 epoch on 5%"),
    *[(m, f, f"{m} from scratch, {f:.0%}") for m in SCRATCH for f in (FEW, 1.0)],
    *[("epr-time", f, f"epr-time from scratch, {f:.0%} (at-time only)") for f in (FEW, 1.0)],
    *[(f"ablation_{a}", 0.05, f"ablation: {a.replace('_', ' ')}") for a in ABLATIONS],
    ("ablation_prior_terms_only", 0.05, "ablation: every hand-made prior term alone (pretrained kind weights "
                                        "calibrated on the 5% share; no Transformer, no learned terms)"),
]


TARGET_KINDS = ("returns", "explorations")  # evaluate's split of the targets (CityData.is_return)
KIND_METRICS = ("acc@1", "acc@5", "acc@10", "mrr", "ndcg@10")


def kind_means(runs: list[dict]) -> dict:
    """Seed means of the ``returns`` / ``explorations`` metrics, for each kind some run carries
    (runs older than the split lack them: the kind is then left out, or averaged over the others)."""
    out = {}
    for kind in TARGET_KINDS:
        parts = [r[kind] for r in runs if isinstance(r.get(kind), dict)]
        if parts:
            out[kind] = {**{k: float(np.mean([p[k] for p in parts])) for k in KIND_METRICS},
                         "n": parts[0]["n"], "seeds": len(parts)}
    return out


def summarise(runs_dir: Path) -> dict:
    """One row per (target, method@fraction): seed means of the current run files in ``runs_dir``."""
    table = {}
    for (target, method, f), runs in read_runs(runs_dir).items():
        acc = np.array([r["acc@1"] for r in runs])
        section = table
        if method.startswith(AT_TIME):  # the at-time section: transfer.json["at-time"][target][row]
            section, method = table.setdefault("at-time", {}), method[len(AT_TIME):]
        section.setdefault(target, {})[f"{method}@{f:g}"] = {
            "acc@1": float(acc.mean()), "acc@1_std": float(acc.std()),
            **{k: float(np.mean([r[k] for r in runs])) for k in ("acc@5", "acc@10", "mrr", "ndcg@10", "seconds", "steps")},
            "seeds": len(runs), "n": runs[0]["n"],
            "pretrain_steps": runs[0].get("pretrain_steps"), "pretrain_seconds": runs[0].get("pretrain_seconds"),
            **kind_means(runs),
        }
        row = section[target][f"{method}@{f:g}"]
        every = [r["all_visits"] for r in runs if isinstance(r.get("all_visits"), dict)]
        if every:  # the same model scored with all training visits' features (trajmoe evaluate's default)
            row["all_visits"] = {**{k: float(np.mean([r[k] for r in every])) for k in ("acc@1", "mrr")},
                                 "seeds": len(every)}
        kept = [r["kept"] for r in runs if r.get("kept")]
        if kept:
            row["kept_fine_tuned"] = sum(k == "fine-tuned" for k in kept)
    for target, rows_at in table.get("at-time", {}).items():  # time-blind baselines score both tasks alike
        for key, row in table.get(target, {}).items():
            if key.split("@")[0] in TIME_BLIND:
                rows_at.setdefault(key, {**row, "time_blind": True})
    return table


def goal_check(table: dict) -> list[str]:
    """The goals of issue 13, per check-in target, computed from the table (never typed by hand)."""
    lines = ["## Goal check (computed from the rows below; TrajMoE = pretrained, fine-tuned 1 epoch on 5%)", "",
             "| target | TrajMoE Acc@1 / MRR | prior terms alone Acc@1 / MRR | full - prior terms (goal >= +0.02 both) "
             "| best baseline on 100% | TrajMoE / best (goal >= 1.05) | explorations MRR: TrajMoE / epr 100% "
             "(goal >= 1.3) | all training visits: fine-tuned / zero-shot (goal >= 1) | seeds that kept the "
             "fine-tuned state |",
             "|---|---|---|---|---|---|---|---|---|"]
    for target in [*sum(CHECKIN_TARGETS.values(), [])]:
        t = table.get(target, {})
        ours, prior, zero = (t.get(f"{m}@0.05") for m in ("trajmoe_pretrained_ft1", "ablation_prior_terms_only",
                                                           "trajmoe_zero_shot"))
        full = {m: t[f"{m}@1"]["acc@1"] for m in SCRATCH if f"{m}@1" in t}
        if ours is None or not full:
            continue
        best = max(full, key=full.get)
        cells = [target, f"{ours['acc@1']:.4f} / {ours['mrr']:.4f}"]
        if prior:
            cells += [f"{prior['acc@1']:.4f} / {prior['mrr']:.4f}",
                      f"{ours['acc@1'] - prior['acc@1']:+.4f} / {ours['mrr'] - prior['mrr']:+.4f}"]
        else:
            cells += ["", ""]
        cells += [f"{best} {full[best]:.4f}", f"{ours['acc@1'] / full[best]:.3f}"]
        epr = t.get("epr@1", {})
        cells.append(f"{ours['explorations']['mrr'] / epr['explorations']['mrr']:.2f}"
                     if ours.get("explorations") and epr.get("explorations") else "")
        ours_all, zero_all = ours.get("all_visits"), (zero or {}).get("all_visits")
        cells.append(f"{ours_all['acc@1']:.4f} / {zero_all['acc@1']:.4f}" if ours_all and zero_all else "")
        cells.append(f"{ours.get('kept_fine_tuned', 0)} of {ours['seeds']}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def goal_check_at_time(section: dict) -> list[str]:
    """The goals of issue 14 (at-time, 5% / 1 epoch), per check-in target, computed from the section."""
    lines = ["## Goal check, at-time (computed from the rows below; TrajMoE = pretrained for both tasks, "
             "fine-tuned 1 epoch on 5% for at-time)", "",
             "| target | TrajMoE Acc@1 / MRR | prior terms alone Acc@1 / MRR | full - prior terms (goal >= +0.03 Acc@1) "
             "| best baseline on 100% | TrajMoE / best (goal >= 1.10) | returns Acc@1: TrajMoE / epr-time 100% "
             "| seeds that kept the fine-tuned state |",
             "|---|---|---|---|---|---|---|---|"]
    for target in [*sum(CHECKIN_TARGETS.values(), [])]:
        t = section.get(target, {})
        ours, prior = t.get("trajmoe_pretrained_ft1@0.05"), t.get("ablation_prior_terms_only@0.05")
        full = {k.split("@")[0]: r["acc@1"] for k, r in t.items() if k.endswith("@1")}
        if ours is None or not full:
            continue
        best = max(full, key=full.get)
        cells = [target, f"{ours['acc@1']:.4f} / {ours['mrr']:.4f}"]
        cells += ([f"{prior['acc@1']:.4f} / {prior['mrr']:.4f}", f"{ours['acc@1'] - prior['acc@1']:+.4f}"]
                  if prior else ["", ""])
        cells += [f"{best} {full[best]:.4f}", f"{ours['acc@1'] / full[best]:.3f}"]
        epr = t.get("epr-time@1", {})
        cells.append(f"{ours['returns']['acc@1']:.4f} / {epr['returns']['acc@1']:.4f}"
                     if ours.get("returns") and epr.get("returns") else "")
        cells.append(f"{ours.get('kept_fine_tuned', 0)} of {ours['seeds']}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def kind_cell(row: dict, kind: str) -> str:
    """``Acc@1 / MRR`` of the row's returns or explorations; blank for runs without the split."""
    part = row.get(kind)
    return f"{part['acc@1']:.4f} / {part['mrr']:.4f}" if part else ""


def target_table(target: str, t: dict, *, every_row: bool = False) -> list[str]:
    """One target's Markdown table: the METHOD_LABELS rows it has (``every_row``: then any other
    row of ``t`` too, labelled by its key, e.g. a pretraining at a custom step count)."""
    first = t[next(iter(t))]
    share = f", {first['returns']['n'] / first['n']:.0%} returns" if first.get("returns") and first["n"] else ""
    lines = [f"## target: {target} ({first['n']} test targets{share})", "",
             "| method | Acc@1 | Acc@5 | Acc@10 | MRR | NDCG@10 | returns Acc@1 / MRR | explorations Acc@1 / MRR "
             "| Acc@1 with all training visits | seeds | steps | wall s | pretrain steps / s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    labels = [(f"{m}@{f:g}", label) for m, f, label in METHOD_LABELS]
    if every_row:
        labels += [(key, key) for key in t if key not in dict(labels)]
    for key, label in labels:
        r = t.get(key)
        if r is None:
            continue
        if r.get("time_blind"):
            label += " (ignores the target's time: the next-task run)"
        pre = f"{r['pretrain_steps']} / {r['pretrain_seconds']:.0f}" if r.get("pretrain_steps") else ""
        every = f"{r['all_visits']['acc@1']:.4f}" if r.get("all_visits") else ""
        lines.append(f"| {label} | {r['acc@1']:.4f} ± {r['acc@1_std']:.4f} | {r['acc@5']:.4f} | {r['acc@10']:.4f} | "
                     f"{r['mrr']:.4f} | {r['ndcg@10']:.4f} | {kind_cell(r, 'returns')} | {kind_cell(r, 'explorations')} | "
                     f"{every} | {r['seeds']} | {r['steps']:.0f} | {r['seconds']:.1f} | {pre} |")
    return lines + [""]


KINDS_NOTE = (f"A return is a test target whose cell is among the person's last {DEFAULT_MAX_LEN} earlier visits "
              "(any split), an exploration any other target, the same for every method.")


def render(table: dict) -> str:
    checkins = [t for t in [*sum(CHECKIN_TARGETS.values(), [])] if t in table]
    others = [t for t in OTHER_KINDS if t in table]
    # rows whose runs predate checkpoint format 4 (bench version 5): the format-3 design, not re-run
    old = sorted({key.split("@")[0] for t in checkins for key in table[t]
                  if key.split("@")[0] not in TIME_BLIND and method_version(key.split("@")[0]) != FORMAT4_VERSION})
    lines = ["# Leave-one-metro-out transfer (real data, the protocol of README.md § Protocol)", "",
             "Acc@1 (mean ± std over seeds) / MRR; steps and wall time on this 2-core CPU machine in brackets.",
             "Pretraining: every dataset of the OTHER metros (GPS, taxi, bike cities included), d=128, 2 layers, "
             "batches of 32 windows (cities drawn ∝ size^0.5); its steps and seconds are in the last column.",
             "Neural runs from scratch: up to 20 epochs, early stopping with patience 3, capped at 3 minutes each (`--scratch-budget-min 3`).",
             "Wall times were measured on a machine shared with other jobs (2-3 benchmark processes on 2 cores): read "
             "them as upper bounds.", KINDS_NOTE,
             "Checkpoint format 4 (issue 14): the TrajMoE rows (fine-tuned, zero-shot, prior terms alone) are "
             f"pretrained {DEFAULT_PRETRAIN_STEPS} steps for both tasks in turn. Rows not re-run on format 4 are the "
             "format-3 design (next only, 600 steps): " + (", ".join(old) if old else "none") + ".", "",
             *goal_check(table)]
    for target in checkins + others:
        if target == (others[0] if others else None):
            lines += ["# Second table: GPS, taxi and bike cities (MANIFEST: reported separately)", "",
                      "Same leave-one-metro-out protocol (each dataset's metro held out of pretraining; "
                      "sf_cabspotting_gps uses the San Francisco checkpoint). mexico_city_taxi_trips is origin -> "
                      "destination only (each 'user' is one trip, split by time); jersey_city_citibike is H3 "
                      "resolution 10 (stations). GRU and dense Transformer rows where their runs finished.", ""]
        lines += target_table(target, table[target])
    at_time = table.get("at-time", {})
    if at_time:
        lines += ["# at-time: where is the next visit, given when it happens", "",
                  "The same protocol, targets and subsets; the model is told the target visit's local hour, weekday "
                  "and the time since the current visit (never its place). The pretrained checkpoints are the ones "
                  "above (trained for both tasks, steps in turn); fine-tuning, head calibration and the keep rule use "
                  "the at-time task. epr-time: return + gravity plus the person's visits within 2 h of the target's "
                  "hour on the same weekday type (hour only where the weekday is unreliable: SF and LA Gowalla) "
                  "and the place's share of the city's visits at that hour, fitted like epr. Most popular, Markov, "
                  "epr and epr+ ignore the target's time: their rows are the next-task runs. In transfer.json: "
                  "the top-level key `at-time`.", "", *goal_check_at_time(at_time)]
        for target in [t for t in [*sum(CHECKIN_TARGETS.values(), [])] if t in at_time]:
            lines += target_table(target, at_time[target])
        lines += ["Re-run the section: `python bench/transfer.py --tasks at-time` (`--at-time-dense` adds the dense "
                  "Transformer pretrained for both tasks).", ""]
    lines += ["Re-run: `python bench/transfer.py` (only missing runs are computed; `--table-only` re-renders).", ""]
    return "\n".join(lines)


def plot(table: dict, path: Path, targets: list[str] | None = None) -> None:
    """Bar chart of test Acc@1 per target (default: the check-in targets) and non-ablation method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if targets is None:
        targets = [t for t in sum(CHECKIN_TARGETS.values(), []) if t in table]
    methods = [(m, f, lab) for m, f, lab in METHOD_LABELS if not m.startswith("ablation")]
    fig, ax = plt.subplots(figsize=(11, 6))
    width = 0.8 / max(1, len(methods))
    colors = plt.get_cmap("tab20").colors
    for i, (m, f, lab) in enumerate(methods):
        vals = [table[t].get(f"{m}@{f:g}", {}).get("acc@1", np.nan) for t in targets]
        ax.bar(np.arange(len(targets)) + i * width, vals, width, label=lab, color=colors[i % len(colors)])
    ax.set_xticks(np.arange(len(targets)) + 0.4 - width / 2, targets)
    ax.set_ylabel("test Acc@1")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    ax.set_title("TrajMoE leave-one-metro-out transfer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)




def render_custom(table: dict) -> str:
    """Markdown of a ``--data`` run: one table per target folder, every row it has."""
    lines = ["# Leave-one-city-out transfer on your prepared folders (the protocol of README.md § Protocol)", "",
             "Acc@1 (mean ± std over seeds) / MRR. Each folder is the target once: TrajMoE pretrained on all the "
             "other folders (d=128, 2 layers), fine-tuned 1 epoch on 5% of the target's training windows or "
             "zero-shot; baselines from scratch on 5% and 100%.", KINDS_NOTE, ""]
    for target in sorted(table):
        lines += target_table(target, table[target], every_row=True)
    return "\n".join(lines)



def write(table: dict, markdown: str, folder: Path, *, plot_targets: list[str] | None = None) -> None:
    """``transfer.json``, ``transfer.md`` and ``transfer.png`` of ``table`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "transfer.json").write_text(json.dumps(table, indent=2))
    (folder / "transfer.md").write_text(markdown)
    plot(table, folder / "transfer.png", plot_targets)
