"""Count and log-linear baselines of the protocol (README.md § Protocol), behind the same interface as TrajMoE.

Every baseline scores the city's candidate cells for the next visit:
``score_last(batch, city) -> (B, N)`` for evaluation, and ``forward(batch, city, targets=False)``
returning an object with ``.logits`` (B, T, N) and ``.aux_loss`` (:class:`BaselineOutput`, which
the neural GRU of ``gru.py`` returns too, so it is trained by :func:`trajmoe.train.fit.fit`
exactly like TrajMoE).

* :class:`MostPopular` — training-subset visit count of each cell (``city.log_pop``).
* :class:`Markov` — first-order transition counts from the run's training windows, backing off to
  popularity among candidates without an observed transition from the current cell.
* :class:`ReturnGravity` — exploration and preferential return (Song et al. 2010, the EPR model)
  plus a gravity term: a log-linear scorer over a few per-candidate features, weights fitted by
  maximum likelihood on the run's validation targets.

The GRU is in ``gru.py``, the dense Transformer is TrajMoE with ``moe=False`` (built by
:mod:`trajmoe.train.models`); :func:`trajmoe.train.runner.run_baseline` trains any of them on a
(few-shot share of a) prepared city and returns its test metrics.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trajmoe.city.batch import TASKS, Batch, CityTensors
from trajmoe.city.data import DEFAULT_MAX_LEN, CityData, iter_batches
from trajmoe.city.transitions import count_transitions, csr_rows
from trajmoe.errors import TrajMoEError
from trajmoe.model.loss import next_cell_loss
from trajmoe.model.returns import (
    context_return_features,
    context_successor_counts,
    context_time_counts,
)
from trajmoe.model.trajmoe import PositionScores

log = logging.getLogger(__name__)


class BaselineOutput(NamedTuple):
    """What ``forward`` returns (the fields train.fit.sequence_loss reads, as TrajMoE's ModelOutput)."""

    logits: torch.Tensor  # (B, T, N) next-cell scores
    loss: torch.Tensor | None  # () mean CE over positions with a candidate target (targets=True)
    aux_loss: torch.Tensor | None  # always None: no auxiliary losses


def baseline_output(logits: torch.Tensor, batch: Batch, *, targets: bool) -> BaselineOutput:
    """``forward``'s result: the (B, T, N) logits and, with ``targets``, their mean next-cell CE."""
    loss = next_cell_loss(logits.float(), batch.targets, reduction="mean") if targets else None
    return BaselineOutput(logits, loss, None)


def _dense_rank(scores: torch.Tensor) -> torch.Tensor:
    """Float32 scores with exactly the order and ties of float64 ``scores`` (B, N).

    Lexicographic scores (transition count first, popularity second) need more precision than
    float32 keeps, and metrics.target_ranks compares in float32; dense ranks are small integers,
    exact in float32.
    """
    sorted_scores, order = scores.sort(dim=-1)
    step = torch.zeros_like(sorted_scores, dtype=torch.long)
    step[..., 1:] = (sorted_scores[..., 1:] != sorted_scores[..., :-1]).long()
    return torch.empty_like(step).scatter_(-1, order, step.cumsum(-1)).float()


# --------------------------------------------------------------------------- most popular
class MostPopular(nn.Module):
    """Every candidate scored by its number of visits in the run's training subset.

    ``city.log_pop`` is log(1 + count) of exactly the training visits the run sees, a strictly
    increasing function of the count, so the ranking is the count ranking (ties stay ties and the
    metric breaks them pessimistically).
    """

    scored_tasks = TASKS  # time-blind: the same scores in both tasks (train.models.check_model_task)

    def forward(self, batch: Batch, city: CityTensors, *, targets: bool = False, task: str = TASKS[0]) -> BaselineOutput:
        n_b, n_t = batch.shape
        return baseline_output(city.log_pop.expand(n_b, n_t, -1), batch, targets=targets)

    reach = 1  # a score depends on no visit at all: one pass per person is exact

    def score_last(self, batch: Batch, city: CityTensors, *, task: str = TASKS[0]) -> torch.Tensor:
        return city.log_pop.expand(batch.shape[0], -1).clone()  # (B, N)

    def score_positions(self, batch: Batch, city: CityTensors, positions: torch.Tensor, *,
                        task: str = TASKS[0]) -> PositionScores:
        return PositionScores(city.log_pop.expand(*positions.shape, -1).clone(), ())  # (B, Q, N)


# --------------------------------------------------------------------------- Markov
class Markov(nn.Module):
    """First-order Markov chain over cells with back-off to popularity.

    Score of candidate n after current cell c: ``count(c -> n) * big + log_pop[n]`` with ``big``
    larger than any log popularity, i.e. candidates ordered by transition count first and by
    popularity among equal counts (so a cell without outgoing transitions falls back to pure
    popularity). Counts come from consecutive visits inside the run's training windows only
    (consecutive windows share one visit, so no transition is counted twice or lost).
    """

    scored_tasks = TASKS  # time-blind: the same scores in both tasks (train.models.check_model_task)

    def __init__(self) -> None:
        super().__init__()
        # CSR transition table: transitions out of cell c are dst[ptr[c]:ptr[c+1]] with counts.
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))  # unfitted: no cells
        self.register_buffer("dst", torch.zeros(0, dtype=torch.long))
        self.register_buffer("count", torch.zeros(0, dtype=torch.float64))

    @property
    def n_cells(self) -> int:
        return self.ptr.numel() - 1

    def fit(self, data: CityData, windows: list[np.ndarray]) -> Markov:
        """Count cell -> next cell transitions of consecutive visits in ``windows``."""
        moves = count_transitions(data.cell_idx, windows, data.n_cells)
        self.ptr, self.dst, self.count = moves.ptr, moves.dst, moves.count
        log.info("Markov: %d transitions, %d distinct, %d of %d cells with outgoing transitions",
                 int(moves.count.sum()), len(moves.dst), int((moves.ptr.diff() > 0).sum()), data.n_cells)
        return self

    def transition_counts(self, current: torch.Tensor) -> torch.Tensor:
        """(M,) current cells -> (M, N) float64 transition counts out of each."""
        if self.n_cells == 0:
            raise TrajMoEError("Markov baseline is not fitted: call fit(data, windows) first.")
        return csr_rows(self.ptr, self.dst, self.count, current, self.n_cells)

    def _scores(self, current: torch.Tensor, city: CityTensors) -> torch.Tensor:
        if city.n_cells != self.n_cells:
            raise TrajMoEError(f"Markov baseline was fitted on {self.n_cells} cells, city {city.name!r} has {city.n_cells}.")
        pop = city.log_pop.double()
        big = float(pop.max().clamp(min=0)) + 1.0
        return _dense_rank(self.transition_counts(current) * big + pop)  # (M, N)

    def forward(self, batch: Batch, city: CityTensors, *, targets: bool = False, task: str = TASKS[0]) -> BaselineOutput:
        n_b, n_t = batch.shape
        return baseline_output(self._scores(batch.cells.reshape(-1), city).view(n_b, n_t, -1), batch, targets=targets)

    reach = 1  # only the current cell matters

    def score_last(self, batch: Batch, city: CityTensors, *, task: str = TASKS[0]) -> torch.Tensor:
        current = batch.cells.gather(1, batch.last_positions()).squeeze(1)
        return self._scores(current, city)

    def score_positions(self, batch: Batch, city: CityTensors, positions: torch.Tensor, *,
                        task: str = TASKS[0]) -> PositionScores:
        current = batch.cells.gather(1, positions)  # (B, Q)
        return PositionScores(self._scores(current.reshape(-1), city).view(*positions.shape, -1), ())


# --------------------------------------------------------------------------- return + gravity
EPR_FEATURES = ("log_count", "recency", "is_current", "seen", "log_pop", "log_km", "explore_log_pop",
                "explore_log_km")
# return + gravity+ (``epr+``): the same plus two sequence features, the strongest hand-made ones
# measured on New York Foursquare (issue 13): the person's own successors of the current cell and
# the city's transitions out of it.
EPR_PLUS_FEATURES = (*EPR_FEATURES, "log_successor", "transition")
# return + gravity at time t (``epr-time``, the at-time task's hand-made baseline): the same plus
# the person's visits to the candidate at about the target's time (+-2 h, same weekday type; the
# hour only where the weekday is unreliable) and the candidate's city-wide share at that hour.
EPR_TIME_FEATURES = (*EPR_FEATURES, "log_time_count", "hour_share")


class ReturnGravity(nn.Module):
    """Exploration and preferential return + gravity: ``score = features @ weight``.

    Four base features, per candidate n at a position:

    * ``log_count``  log(1 + visits to n among the user's last ``window`` visits);
    * ``recency``    1 / (1 + visits since the last one to n), 0 if n is not among them;
    * ``log_pop``    log(1 + training-subset visits to n) (``city.log_pop``), the gravity mass;
    * ``log_km``     log(1 + km from the current cell to n), the gravity distance decay;

    and four interactions that make it the two-regime model EPR is (Song et al., Nature Physics
    2010: with probability P_new the user explores a new place, otherwise returns to a visited one
    in proportion to past visits), each fitted, none fixed:

    * ``is_current`` 1 for the current cell. Preparation collapses consecutive repeats, so in
      per-user sequences the next cell is never the current one although it has the highest
      count-and-recency of all; one weight learns that (strongly negative on check-ins, and
      whatever the data says for trips, where origin = destination is allowed);
    * ``seen``       1 if n is among the last ``window`` visits: the return-vs-explore split;
    * ``explore_log_pop``, ``explore_log_km`` = (1 - seen) * log_pop, (1 - seen) * log_km: gravity
      may choose new places differently from returns (on nyc_foursquare popularity matters for
      new places and hardly at all among returns).

    Measured on nyc_foursquare (100%, validation-fitted, test Acc@1): the four plain features
    0.291, + is_current 0.330, + all four interactions 0.349.

    Eight weights, fitted by maximum likelihood (softmax over all candidates) on the run's
    validation targets by damped Newton (:meth:`fit`). Zero weights = uniform scores.

    ``plus=True`` is return + gravity+ (``epr+``), ten weights fitted the same way, adding:

    * ``log_successor`` log(1 + times the user went from the current cell to n among the last
      ``window`` visits) (returns.context_successor_counts);
    * ``transition``  the share of the run's training moves out of the current cell that went to
      n, shrunk toward 0 for rarely-left cells (city.transitions, ``CityTensors.transition_rows``).

    ``time=True`` is return + gravity at time t (``epr-time``, the at-time task), ten weights
    fitted the same way, adding:

    * ``log_time_count`` log(1 + visits to n among the last ``window`` whose hour is within 2 h of
      the target visit's and whose weekday type (weekday / weekend) is the target's; the hour only
      where the city's weekday is unreliable) (returns.context_time_counts);
    * ``hour_share`` log of n's share of the run's training visits within 1 h of the target's hour,
      relative to a flat day (features.hour_log_share, ``CityTensors.hour_share``).
    """

    def __init__(self, *, window: int = 64, plus: bool = False, time: bool = False) -> None:
        super().__init__()
        if plus and time:
            raise TrajMoEError("return + gravity takes either the sequence features (epr+) or the time features (epr-time)")
        self.window = window
        self.plus = plus
        self.time = time
        self.feature_names = EPR_PLUS_FEATURES if plus else EPR_TIME_FEATURES if time else EPR_FEATURES
        self.weight = nn.Parameter(torch.zeros(len(self.feature_names)))

    @property
    def scored_tasks(self) -> tuple[str, ...]:
        """``at-time`` only for epr-time; plain return + gravity ignores the target's time (either task)."""
        return ("at-time",) if self.time else TASKS

    def _check(self, task: str) -> None:
        if self.time and task != "at-time":
            raise TrajMoEError("epr-time scores a visit given its time: use it with --task at-time "
                               "(for --task next use epr or epr+).")

    def features(self, batch: Batch, city: CityTensors, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Q, N, K) features at ``positions`` (B, Q) (default: every position), in
        :attr:`feature_names` order."""
        return self._features(batch, city, positions).permute(1, 2, 3, 0)

    def _score(self, batch: Batch, city: CityTensors, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Q, N) scores. Features are stacked feature-major (K, B, Q, N): a plain copy, where
        stacking them last (B, Q, N, K) is a strided write several times slower."""
        feats = self._features(batch, city, positions)
        return torch.tensordot(self.weight.to(feats.dtype), feats, dims=1)

    def _features(self, batch: Batch, city: CityTensors, positions: torch.Tensor | None) -> torch.Tensor:
        n_b, n_t = batch.shape
        if positions is None:
            positions = torch.arange(n_t, device=batch.cells.device).expand(n_b, n_t)
        count, recency = context_return_features(batch.cells, batch.mask, city.n_cells, window=self.window,
                                                 positions=positions)  # (B, Q, N) each
        current = batch.cells.gather(1, positions)  # (B, Q)
        is_current = F.one_hot(current, city.n_cells).to(count.dtype)
        seen = (count > 0).to(count.dtype)
        xy = city.xy_km.to(count.dtype)
        km = torch.cdist(xy[current].reshape(-1, 2), xy, compute_mode="donot_use_mm_for_euclid_dist")
        log_km = km.view(n_b, -1, city.n_cells).log1p()
        log_pop = city.log_pop.to(count.dtype).expand_as(count)
        new = 1.0 - seen
        feats = [count.log1p(), recency, is_current, seen, log_pop, log_km, new * log_pop, new * log_km]
        if self.plus:
            succ = context_successor_counts(batch.cells, batch.mask, city.n_cells, window=self.window,
                                            positions=positions)
            trans = city.transition_rows(current.reshape(-1)).view_as(count).to(count.dtype)
            feats += [succ.log1p(), trans]
        if self.time:
            hour, weekday, _ = batch.target_time()
            timed = context_time_counts(batch.cells, batch.mask, batch.hour, batch.weekday, hour, weekday,
                                        city.n_cells, window=self.window, positions=positions)
            if city.hour_share is None:
                raise TrajMoEError("epr-time needs the city's visits per hour: build the city tensors with CityData.city_tensors")
            feats += [timed.log1p(), city.hour_share.to(count.dtype)[hour.gather(1, positions)]]
        return torch.stack(feats)

    def forward(self, batch: Batch, city: CityTensors, *, targets: bool = False, task: str = TASKS[0]) -> BaselineOutput:
        self._check(task)
        return baseline_output(self._score(batch, city), batch, targets=targets)

    @property
    def reach(self) -> int:
        """The features look at the last ``window`` visits (the current one included)."""
        return self.window

    def score_last(self, batch: Batch, city: CityTensors, *, task: str = TASKS[0]) -> torch.Tensor:
        self._check(task)
        return self._score(batch, city, batch.last_positions()).squeeze(1)

    @torch.no_grad()
    def score_positions(self, batch: Batch, city: CityTensors, positions: torch.Tensor, *,
                        task: str = TASKS[0]) -> PositionScores:
        self._check(task)
        return PositionScores(self._score(batch, city, positions), ())

    def nll(self, batches: list[Batch], city: CityTensors) -> float:
        """Mean negative log-likelihood of the last-position targets of ``batches`` (MISS excluded)."""
        total, n = 0.0, 0
        with torch.no_grad():
            for batch in batches:
                loss, _, _, k = self._chunk_stats(batch, city, self.weight.detach(), hessian=False)
                total, n = total + loss, n + k
        return total / max(n, 1)

    def _chunk_stats(self, batch: Batch, city: CityTensors, weight: torch.Tensor, *, hessian: bool = True):
        """Summed NLL, gradient (K,) and Hessian (K, K) over one chunk's last-position targets.

        Softmax regression: grad = sum_b (E_p[f] - f_target), Hessian = sum_b Cov_p[f], with p the
        softmax over all N candidates. Returns (nll, grad, hessian, number of targets).
        """
        last = batch.last_positions()
        truth = batch.targets.gather(1, last).squeeze(1)
        keep = truth >= 0
        truth = truth[keep]
        feats = self._features(batch, city, last)[:, keep, 0]  # (K, B, N)
        logp = torch.tensordot(weight.to(feats.dtype), feats, dims=1).log_softmax(-1)  # (B, N)
        rows = torch.arange(len(truth))
        nll = -float(logp[rows, truth].double().sum())
        if not hessian:
            return nll, None, None, len(truth)
        p = logp.exp_()
        mean = torch.einsum("kbn,bn->kb", feats, p)  # E_p[f] per target
        grad = (mean - feats[:, rows, truth]).double().sum(1)
        flat = feats.reshape(len(weight), -1)
        second = (flat * p.reshape(1, -1)) @ flat.T  # sum_b E_p[f f^T]
        return nll, grad, second.double() - mean.double() @ mean.double().T, len(truth)

    def fit(self, data: CityData, city: CityTensors, targets: np.ndarray, *, max_len: int = DEFAULT_MAX_LEN,
            max_iter: int = 50, l2: float = 1e-4, tol: float = 1e-7, batch_size: int = 512, progress=None) -> dict:
        """Maximum-likelihood weights on ``targets`` (the run's validation targets).

        The negative log-likelihood of a softmax over all candidates is convex in the weights, and
        there are only eight of them, so damped Newton (exact K x K Hessian, Armijo backtracking)
        converges in a handful of passes over the targets, where L-BFGS needed ~60. Each pass
        recomputes the features chunk by chunk (``batch_size`` targets), so memory stays at one
        (8, batch_size, N) block. ``l2`` (per target) keeps weights finite when a feature
        separates perfectly (``is_current`` on check-ins). Stops when half the Newton decrement
        (the predicted NLL gain per target) is below ``tol``, or when no step along the Newton
        direction lowers the NLL any more (float32 features limit how far it can be resolved).

        Returns
        -------
        dict
            ``nll_before`` (zero weights: log N), ``nll_after`` (mean per target, without the l2
            term) and ``evaluations`` (passes over the targets).
        """
        batches = [data.eval_batch(chunk, max_len=max_len) for chunk in iter_batches(np.asarray(targets), batch_size)]
        n_weights = len(self.feature_names)
        passes = 0

        def stats(w: torch.Tensor):
            nonlocal passes
            passes += 1
            loss, grad, hess, n = 0.0, torch.zeros(n_weights, dtype=torch.float64), 0.0, 0
            with torch.no_grad():
                for batch in batches:
                    c_loss, c_grad, c_hess, c_n = self._chunk_stats(batch, city, w)
                    loss, grad, hess, n = loss + c_loss, grad + c_grad, hess + c_hess, n + c_n
            if n == 0:
                raise TrajMoEError("No validation target inside the candidates: the return + gravity weights "
                                   "cannot be fitted. Use a larger --fraction or check the prepared folder.")
            eye = torch.eye(n_weights, dtype=torch.float64)
            return (loss / n + l2 * float(w @ w), loss / n, grad / n + 2 * l2 * w, hess / n + 2 * l2 * eye)

        w = self.weight.detach().double()
        objective, before, grad, hess = stats(w)
        for it in range(max_iter):
            step = torch.linalg.solve(hess, grad)
            decrement = float(grad @ step)
            if progress is not None:
                progress(it + 1, max_iter, objective)
            if decrement / 2 < tol:
                break
            t, new = 1.0, None
            # Armijo backtracking: a full Newton step is usually accepted at once. Collinear features
            # (trip data: the context is one origin, so recency = is_current = seen) leave the Hessian
            # near-singular and the Newton step huge: backtrack far enough to still take a step.
            while t >= 2.0**-30:
                trial = stats(w - t * step)
                if trial[0] <= objective - 0.25 * t * decrement:
                    new = trial
                    break
                t /= 2
            if new is None:  # no step decreases the NLL at float32 precision: converged
                break
            w = w - t * step
            objective, _, grad, hess = new
        if progress is not None:
            progress(max_iter, max_iter, objective)  # close a progress bar Newton finished early
        with torch.no_grad():
            self.weight.copy_(w.to(self.weight.dtype))
        after = self.nll(batches, city)
        log.info("return+gravity weights %s: val NLL %.4f -> %.4f (%d passes)",
                 dict(zip(self.feature_names, self.weight.tolist())), before, after, passes)
        return {"nll_before": before, "nll_after": after, "evaluations": passes}

