"""The two tasks: ``next`` never reads the target's time, ``at-time`` never reads its place.

Scores are taken through the evaluation path (one-pass segments, the head's sparse terms, the
router priors), on the embedded default's prepared city.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from trajmoe.city.batch import TASKS
from trajmoe.errors import TrajMoEError
from trajmoe.train.baselines import Markov, ReturnGravity
from trajmoe.train.evaluate import iter_scores
from trajmoe.train.models import check_model_task


@pytest.fixture(scope="module")
def model(new_tiny):
    m, _ = new_tiny()
    with torch.no_grad():  # the at-time terms and the learned scorer all weigh in
        m.head.prior.normal_(generator=torch.Generator().manual_seed(1))
    return m.eval()


def _targets(data, n: int = 40) -> np.ndarray:
    """Up to ``n`` test targets, one per person (none is in another's context)."""
    t = data.targets("test")
    _, first = np.unique(data.user_of_visit[t], return_index=True)
    return t[np.sort(first)][:n]


def _scores(model, data, targets, city, task: str = "next") -> dict[int, torch.Tensor]:
    out = {}
    for chunk, scores, _ in iter_scores(model, data, targets, city=city, task=task):
        out.update({int(t): s for t, s in zip(chunk, scores)})
    return out


def _changed(data, targets, *, cell: bool = False, time: bool = False):
    """A copy of ``data`` whose ``targets`` visits have another cell and/or another time."""
    other = copy.copy(data)
    if cell:
        other.cell_idx = data.cell_idx.copy()
        other.cell_idx[targets] = (data.cell_idx[targets] + 7) % data.n_cells
    if time:
        other.hour, other.weekday, other.gap_bucket = (data.hour.copy(), data.weekday.copy(), data.gap_bucket.copy())
        other.hour[targets] = (data.hour[targets] + 9) % 24
        other.weekday[targets] = (data.weekday[targets] + 3) % 7
        other.gap_bucket[targets] = (data.gap_bucket[targets] + 4) % 9
    return other


@pytest.mark.parametrize("task", TASKS)
def test_a_task_never_reads_what_it_must_not_know(model, small_helsinki, task):
    """at-time: another target CELL leaves every score unchanged; next: another target TIME does.
    And the other way round each change moves the scores, so the check can fail."""
    data = small_helsinki
    targets = _targets(data)
    city = data.city_tensors()  # from training visits only: the test targets are not in it
    before = _scores(model, data, targets, city, task)
    hidden = _changed(data, targets, cell=task == "at-time", time=task == "next")
    after = _scores(model, hidden, targets, city, task)
    for t in targets:
        torch.testing.assert_close(after[int(t)], before[int(t)], rtol=0, atol=0)
    if task == "at-time":  # the query does read the target's time
        moved = _scores(model, _changed(data, targets, time=True), targets, city, task)
        assert sum(not torch.equal(moved[int(t)], before[int(t)]) for t in targets) > len(targets) // 2


def test_at_time_scores_differ_from_next(model, small_helsinki):
    data, targets = small_helsinki, _targets(small_helsinki)
    city = data.city_tensors()
    nxt = _scores(model, data, targets, city, "next")
    at = _scores(model, data, targets, city, "at-time")
    assert all(not torch.equal(nxt[int(t)], at[int(t)]) for t in targets)


def test_epr_time_uses_the_target_time_and_refuses_next(small_helsinki):
    data = small_helsinki
    targets = _targets(data)
    city = data.city_tensors()
    epr = ReturnGravity(time=True)
    assert epr.feature_names[-2:] == ("log_time_count", "hour_share")
    with torch.no_grad():
        epr.weight.fill_(0.0)
        epr.weight[-2:] = torch.tensor([2.0, 1.0])
    before = _scores(epr, data, targets, city, "at-time")
    same = _scores(epr, _changed(data, targets, cell=True), targets, city, "at-time")
    moved = _scores(epr, _changed(data, targets, time=True), targets, city, "at-time")
    assert all(torch.equal(same[int(t)], before[int(t)]) for t in targets)
    assert sum(not torch.equal(moved[int(t)], before[int(t)]) for t in targets) > len(targets) // 2
    with pytest.raises(TrajMoEError, match="--task at-time"):
        check_model_task(epr, "next")
    with pytest.raises(TrajMoEError, match="--task at-time"):
        _scores(epr, data, targets, city, "next")
    check_model_task(Markov(), "at-time")  # count models ignore the time: fine for either task


def test_time_counts_use_the_hour_only_when_the_weekday_is_unknown():
    from trajmoe.city.batch import UNKNOWN_WEEKDAY
    from trajmoe.model.returns import time_matches

    hour = torch.tensor([8, 8, 8, 11, 23])
    day = torch.tensor([0, 6, UNKNOWN_WEEKDAY, 0, 0])
    got = time_matches(hour, day, torch.tensor(9), torch.tensor(1))  # a Tuesday 9:00 target
    assert got.tolist() == [True, False, True, True, False]
    assert time_matches(torch.tensor(23), torch.tensor(0), torch.tensor(1), torch.tensor(0)).item()  # across midnight


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "trajmoe", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_cli_tasks_end_to_end(small_helsinki, tmp_path):
    """pretrain for next only -> evaluate --task at-time says so; finetune --task at-time teaches it;
    evaluate and baseline epr-time then score at-time (and epr-time refuses next)."""
    import json

    data = small_helsinki.folder
    ck = tmp_path / "next_only.safetensors"
    proc = _cli("pretrain", "--data", data, "--out", ck, "--d-model", "32", "--layers", "1", "--max-steps", "4",
                "--task", "next")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(ck.with_suffix(".json").read_text())["config"]["tasks"] == ["next"]
    proc = _cli("evaluate", "--checkpoint", ck, "--data", data, "--json", tmp_path / "e.json", "--task", "at-time")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "trained for the task(s) next, not 'at-time'" in proc.stderr and "--task at-time" in proc.stderr
    tuned = tmp_path / "tuned.safetensors"
    proc = _cli("finetune", "--checkpoint", ck, "--data", data, "--out", tuned, "--max-steps", "3", "--task", "at-time")
    assert proc.returncode == 0, proc.stderr
    sidecar = json.loads(tuned.with_suffix(".json").read_text())
    assert sidecar["config"]["tasks"] == ["next", "at-time"] and sidecar["training"]["tasks"] == ["at-time"]
    proc = _cli("evaluate", "--checkpoint", tuned, "--data", data, "--json", tmp_path / "e.json", "--task", "at-time")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "e.json").read_text())
    assert metrics["task"] == "at-time" and 0 <= metrics["acc@1"] <= 1 and metrics["n"] > 0
    proc = _cli("baseline", "--model", "epr-time", "--task", "at-time", "--data", data, "--json", tmp_path / "b.json")
    assert proc.returncode == 0, proc.stderr
    epr_time = json.loads((tmp_path / "b.json").read_text())
    assert epr_time["task"] == "at-time" and epr_time["n"] == metrics["n"]
    proc = _cli("baseline", "--model", "epr-time", "--data", data, "--json", tmp_path / "b2.json")
    assert proc.returncode != 0 and "--task at-time" in proc.stderr and "Traceback" not in proc.stderr
