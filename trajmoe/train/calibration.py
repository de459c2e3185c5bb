"""Head calibration: after training, fit the output head's few prior weights on validation targets.

Maximum a posteriori with L-BFGS on the Transformer states computed once (one pass per person); the prior pulls toward
the weights the city's kind learned in pretraining (:data:`CALIBRATION_PRIOR_TARGETS`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trajmoe.city.batch import TASKS, CityTensors
from trajmoe.city.data import CityData
from trajmoe.city.segments import segment_batches
from trajmoe.train.device import model_device

# How strongly head calibration pulls the prior weights back toward the ones training left (the
# weights the city's kind learned in pretraining): a Gaussian prior worth this many validation
# targets. Chosen on SOURCE cities only (bench/results/calibration_prior.md: refitting on 54 validation
# targets, la_gowalla's 5% share, the optimum is flat from 30 up; plain maximum likelihood is noisy).
CALIBRATION_PRIOR_TARGETS = 100.0


def calibrate_head(model, data: CityData, city: CityTensors, targets: np.ndarray, *, task: str = TASKS[0],
                   max_iter: int = 100, prior_targets: float = CALIBRATION_PRIOR_TARGETS,
                   fit_similarity: bool = True) -> dict:
    """Fit the output head's prior weights for ``city.kind`` in ``task`` (distance decay, return, seen,
    current-cell, popularity, successor and transition terms) and the trust in its learned terms
    (``head.scales``: similarity, return scorer) on ``targets``, everything else frozen.

    Maximum a posteriori with L-BFGS: the validation NLL plus a Gaussian prior centred on the
    values training left (for a pretrained model: what the city's kind learned on every source
    city of that kind, and trust 1 in the learned terms), worth ``prior_targets`` targets (0 =
    plain maximum likelihood, the fit the return + gravity baseline gets). The scales used to be
    fitted without a prior; on a 5% validation share (54 targets on la_gowalla) that is a noisy
    two-parameter fit, and a fine-tuned model must not end below its starting point, so they are
    shrunk like the rest. L-BFGS converges in seconds because the Transformer states are
    computed once. ``fit_similarity=False`` leaves the scales as they are (the ablation "prior
    terms alone" sets them to 0). Returns NLL before/after (without the prior term) and the
    target count.
    """
    head = getattr(model, "head", None)
    if not (hasattr(model, "states_at") and head is not None) or not len(targets):
        return {}  # only the TrajMoE family (and its dense variant) has the prior-term head
    scalars = [head.prior, *head.scales] if fit_similarity else [head.prior]
    model.eval()
    device = model_device(model)
    city = city.to(device)
    cached = []  # per one-pass batch: the batch, scored positions, their states, truth, which to use
    with torch.no_grad():
        cell_emb = model.encode_cells(city)
        for part in segment_batches(data, np.asarray(targets), reach=model.reach, n_cells=city.n_cells):
            batch, positions = part.batch.to(device), part.positions.to(device)
            h_q = model.states_at(batch, city, cell_emb, positions, task=task)  # (B, Q, C)
            truth = batch.targets.gather(1, positions)  # (B, Q)
            keep = part.valid.to(device) & (truth >= 0)
            if keep.any():
                cached.append((batch, positions, h_q, truth, keep))
    if not cached:
        return {}
    frozen = [p for p in model.parameters() if p.requires_grad and all(p is not s for s in scalars)]
    for p in frozen:
        p.requires_grad_(False)
    n = sum(int(c[4].sum()) for c in cached)

    def nll() -> torch.Tensor:
        total = torch.zeros((), device=device)
        for batch, positions, h_q, truth, keep in cached:
            logits = head(h_q, positions, batch=batch, city=city, cell_emb=cell_emb, task=task)  # (B, Q, N)
            total = total + F.cross_entropy(logits[keep], truth[keep], reduction="sum")
        return total / n

    saved = [p.detach().clone() for p in scalars]

    def objective() -> torch.Tensor:
        return nll() + 0.5 * prior_targets / n * sum(((p - v) ** 2).sum() for p, v in zip(scalars, saved))

    try:
        with torch.no_grad():
            before, start = float(nll()), float(objective())
        opt = torch.optim.LBFGS(scalars, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            after, end = float(nll()), float(objective())
        if not end <= start:  # never leave the head worse on the objective it was fitted on
            with torch.no_grad():
                for p, v in zip(scalars, saved):
                    p.copy_(v)
            after = before
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return {"nll_before": before, "nll_after": after, "targets": n}
