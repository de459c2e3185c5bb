"""Baselines of DESIGN.md §Protocol, behind the same interface as TrajMoE.

Every baseline scores the city's candidate cells for the next visit:
``score_last(batch, city) -> (B, N)`` for evaluation, and ``forward(batch, city, targets=False)``
returning an object with ``.logits`` (B, T, N) and ``.aux_loss``, so the neural ones are trained
by :func:`trajmoe.train.fit.fit` exactly like TrajMoE.

* :class:`MostPopular` — training-subset visit count of each cell (``city.log_pop``).
* :class:`Markov` — first-order transition counts from the run's training windows, backing off to
  popularity among candidates without an observed transition from the current cell.
* :class:`ReturnGravity` — exploration and preferential return (Song et al. 2010, the EPR model)
  plus a gravity term: a log-linear scorer over a few per-candidate features, weights fitted by
  maximum likelihood on the run's validation targets.
* :class:`GRUNextLocation` — DeepMove-style recurrent model (Feng et al., WWW 2018): GRU over the
  visits, attention over its past states, candidates scored by embedding similarity; cells are
  embedded from their features, never from a per-city ID table.
* The dense Transformer is TrajMoE with ``moe=False`` (built by :mod:`trajmoe.train.models`).

:func:`run_baseline` trains one of them on a (few-shot share of a) prepared city and returns its
test metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trajmoe.city.batch import IGNORE, N_GAP_BUCKETS, UNKNOWN_WEEKDAY, Batch, CityTensors
from trajmoe.city.data import DEFAULT_MAX_LEN, CityData, iter_batches
from trajmoe.city.features import FEATURE_DIM
from trajmoe.city.subset import run_subset
from trajmoe.errors import TrajMoEError
from trajmoe.model.returns import context_return_features

log = logging.getLogger(__name__)

BASELINES = ("popular", "markov", "epr", "gru", "transformer")
N_HOUR_OF_WEEK = 24 * (UNKNOWN_WEEKDAY + 1)  # Mon..Sun + unknown weekday, 24 hours each


class BaselineOutput(NamedTuple):
    """What ``forward`` returns (the fields train.sequence_loss reads, as TrajMoE's ModelOutput)."""

    logits: torch.Tensor  # (B, T, N) next-cell scores
    loss: torch.Tensor | None  # () mean CE over positions with a candidate target (targets=True)
    aux_loss: torch.Tensor | None  # always None: no auxiliary losses


def _last_positions(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1) index of each sequence's last real visit."""
    return (mask.sum(dim=1) - 1).clamp(min=0).unsqueeze(1)


def _output(logits: torch.Tensor, batch: Batch, targets: bool) -> BaselineOutput:
    loss = None
    if targets:
        tgt = batch.targets.masked_fill(batch.targets < 0, IGNORE)  # MISS is not trainable
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1), ignore_index=IGNORE)
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

    def forward(self, batch: Batch, city: CityTensors, *, targets: bool = False) -> BaselineOutput:
        n_b, n_t = batch.shape
        return _output(city.log_pop.expand(n_b, n_t, -1), batch, targets)

    def score_last(self, batch: Batch, city: CityTensors) -> torch.Tensor:
        return city.log_pop.expand(batch.shape[0], -1).clone()  # (B, N)


# --------------------------------------------------------------------------- Markov
class Markov(nn.Module):
    """First-order Markov chain over cells with back-off to popularity.

    Score of candidate n after current cell c: ``count(c -> n) * big + log_pop[n]`` with ``big``
    larger than any log popularity, i.e. candidates ordered by transition count first and by
    popularity among equal counts (so a cell without outgoing transitions falls back to pure
    popularity). Counts come from consecutive visits inside the run's training windows only
    (consecutive windows share one visit, so no transition is counted twice or lost).
    """

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
        n = data.n_cells
        pairs = [np.column_stack([data.cell_idx[w[:-1]], data.cell_idx[w[1:]]]) for w in windows if len(w) > 1]
        pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)
        pairs = pairs[(pairs >= 0).all(axis=1)]
        keys, counts = np.unique(pairs[:, 0] * n + pairs[:, 1], return_counts=True)  # sorted by src
        src = keys // n
        self.ptr = torch.from_numpy(np.searchsorted(src, np.arange(n + 1)).astype(np.int64))
        self.dst = torch.from_numpy((keys % n).astype(np.int64))
        self.count = torch.from_numpy(counts.astype(np.float64))
        log.info("Markov: %d transitions, %d distinct, %d of %d cells with outgoing transitions",
                 int(counts.sum()), len(keys), len(np.unique(src)), n)
        return self

    def transition_counts(self, current: torch.Tensor) -> torch.Tensor:
        """(M,) current cells -> (M, N) float64 transition counts out of each."""
        if self.n_cells == 0:
            raise TrajMoEError("Markov baseline is not fitted: call fit(data, windows) first.")
        start, stop = self.ptr[current], self.ptr[current + 1]
        lengths = stop - start
        row = torch.repeat_interleave(torch.arange(len(current), device=current.device), lengths)
        offset = torch.arange(int(lengths.sum()), device=current.device) - torch.repeat_interleave(
            lengths.cumsum(0) - lengths, lengths)
        flat = torch.repeat_interleave(start, lengths) + offset
        out = torch.zeros(len(current), self.n_cells, dtype=torch.float64, device=current.device)
        out[row, self.dst[flat]] = self.count[flat]
        return out

    def _scores(self, current: torch.Tensor, city: CityTensors) -> torch.Tensor:
        if city.n_cells != self.n_cells:
            raise TrajMoEError(f"Markov baseline was fitted on {self.n_cells} cells, city {city.name!r} has {city.n_cells}.")
        pop = city.log_pop.double()
        big = float(pop.max().clamp(min=0)) + 1.0
        return _dense_rank(self.transition_counts(current) * big + pop)  # (M, N)

    def forward(self, batch: Batch, city: CityTensors, *, targets: bool = False) -> BaselineOutput:
        n_b, n_t = batch.shape
        return _output(self._scores(batch.cells.reshape(-1), city).view(n_b, n_t, -1), batch, targets)

    def score_last(self, batch: Batch, city: CityTensors) -> torch.Tensor:
        current = batch.cells.gather(1, _last_positions(batch.mask)).squeeze(1)
        return self._scores(current, city)


# --------------------------------------------------------------------------- return + gravity
EPR_FEATURES = ("log_count", "recency", "is_current", "seen", "log_pop", "log_km", "explore_log_pop",
                "explore_log_km")


class ReturnGravity(nn.Module):
    """Exploration and preferential return + gravity: ``score = features @ weight``.

    The four features DESIGN.md §Protocol fixes, per candidate n at a position:

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
    """

    def __init__(self, *, window: int = 64) -> None:
        super().__init__()
        self.window = window
        self.weight = nn.Parameter(torch.zeros(len(EPR_FEATURES)))

    def features(self, batch: Batch, city: CityTensors, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Q, N, 8) features at ``positions`` (B, Q) (default: every position), EPR_FEATURES order."""
        return self._features(batch, city, positions).permute(1, 2, 3, 0)

    def _score(self, batch: Batch, city: CityTensors, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Q, N) scores. Features are stacked feature-major (K, B, Q, N): a plain copy, where
        stacking them last (B, Q, N, K) is a strided write several times slower."""
        return torch.tensordot(self.weight, self._features(batch, city, positions), dims=1)

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
        return torch.stack([count.log1p(), recency, is_current, seen, log_pop, log_km, new * log_pop, new * log_km])

    def forward(self, batch: Batch, city: CityTensors, *, targets: bool = False) -> BaselineOutput:
        return _output(self._score(batch, city), batch, targets)

    def score_last(self, batch: Batch, city: CityTensors) -> torch.Tensor:
        return self._score(batch, city, _last_positions(batch.mask)).squeeze(1)

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
        last = _last_positions(batch.mask)
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
        n_weights = len(EPR_FEATURES)
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
                 dict(zip(EPR_FEATURES, self.weight.tolist())), before, after, passes)
        return {"nll_before": before, "nll_after": after, "evaluations": passes}


# --------------------------------------------------------------------------- GRU (DeepMove-style)
@dataclasses.dataclass
class GRUConfig:
    """Configuration of :class:`GRUNextLocation`; round-trips through ``dataclasses.asdict``."""

    d_model: int = 128  # width of cell/time embeddings and of the GRU state (TrajMoE's default width)
    n_layers: int = 1  # DeepMove uses one recurrent layer
    feature_dim: int = FEATURE_DIM  # width of CityTensors.features (features.py schema)
    dropout: float = 0.1
    # Wavelengths (km) of the sin/cos encoding of each cell's position relative to the city centre:
    # from a quarter of a res-8 cell's width to a metro area. See GRUNextLocation.
    coord_scales_km: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)

    def __post_init__(self) -> None:
        self.coord_scales_km = tuple(float(x) for x in self.coord_scales_km)
        if any(x <= 0 for x in self.coord_scales_km):
            raise TrajMoEError(f"invalid GRU config: coord_scales_km must be positive, got {self.coord_scales_km}")
        if self.d_model < 1 or self.n_layers < 1 or self.feature_dim < 1:
            raise TrajMoEError(f"invalid GRU config: d_model, n_layers and feature_dim must be >= 1, got {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise TrajMoEError(f"invalid GRU config: dropout must be in [0, 1), got {self.dropout}")


class GRUNextLocation(nn.Module):
    """DeepMove-style recurrent next-location model (Feng et al., WWW 2018), city-agnostic.

    Token = cell embedding + hour-of-week embedding + time-gap embedding; a GRU runs over the
    visits; at each position the state attends (causally) over the states of the earlier visits
    of the sequence — DeepMove's historical attention — and ``[state, attended]`` becomes a query
    that scores every candidate by dot product with its embedding (plus a per-cell bias from the
    same features). Cell embeddings come from a small MLP over ``city.features`` (the spatial
    features TrajMoE's encoder sees), so one model works on any city that has a cell table.
    No explicit return terms: it is the recurrent baseline as published, not TrajMoE's head.

    Without an ID table, telling neighbouring cells apart rests on their coordinates, which an MLP
    reads badly as two raw numbers (spectral bias; Tancik et al., NeurIPS 2020). The MLP therefore
    also gets ``sin/cos(2 pi x / lambda)`` of the cell's km offsets for the wavelengths
    ``coord_scales_km`` — the same information, encoded so that nearby cells differ. On
    nyc_foursquare (100%, 10 epochs, an earlier tanh-scaled head) it lifted test Acc@1 from 0.164
    to 0.194; with the plain head below, 10 epochs reach 0.258 and 25 epochs 0.299.
    """

    def __init__(self, config: GRUConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.register_buffer("coord_freq", 2 * math.pi / torch.tensor(config.coord_scales_km), persistent=False)
        n_in = config.feature_dim + 4 * len(config.coord_scales_km)  # + sin, cos of x and y per wavelength
        self.cell_mlp = nn.Sequential(nn.Linear(n_in, 2 * d), nn.GELU(), nn.Linear(2 * d, d), nn.LayerNorm(d))
        self.time_emb = nn.Embedding(N_HOUR_OF_WEEK, d)
        self.gap_emb = nn.Embedding(N_GAP_BUCKETS, d)
        self.drop = nn.Dropout(config.dropout)
        self.gru = nn.GRU(d, d, num_layers=config.n_layers, batch_first=True,
                          dropout=config.dropout if config.n_layers > 1 else 0.0)
        self.attn_query = nn.Linear(d, d, bias=False)
        self.head = nn.Linear(2 * d, d)
        self.cell_out = nn.Linear(d, d)
        self.cell_bias = nn.Linear(d, 1)

    def _states(self, batch: Batch, cell_emb: torch.Tensor) -> torch.Tensor:
        """(B, T, C) query states; position t depends on visits 0..t only (right padding ignored)."""
        x = cell_emb[batch.cells] + self.time_emb(batch.weekday * 24 + batch.hour) + self.gap_emb(batch.gap_bucket)
        h, _ = self.gru(self.drop(x))  # (B, T, C), causal by construction
        n_t = h.shape[1]
        scores = self.attn_query(h) @ h.transpose(1, 2) / math.sqrt(h.shape[-1])  # (B, T, T)
        causal = torch.ones(n_t, n_t, dtype=torch.bool, device=h.device).tril()
        allowed = causal & batch.mask.unsqueeze(1)  # keys: earlier real visits (and itself)
        ctx = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0) @ h  # (B, T, C)
        return self.head(self.drop(torch.cat([h, ctx], dim=-1)))  # DeepMove: dropout, then a linear output layer

    def _logits(self, q: torch.Tensor, cell_emb: torch.Tensor) -> torch.Tensor:
        keys = self.cell_out(cell_emb)  # (N, C)
        # An unscaled dot product, like DeepMove's final fully connected layer (whose weight rows
        # are the candidates' embeddings here): 1/sqrt(C) and a tanh on q cost 0.06 Acc@1 at 10 epochs.
        return q @ keys.T + self.cell_bias(cell_emb).squeeze(-1)

    def _cell_emb(self, city: CityTensors) -> torch.Tensor:
        if city.features.shape[1] != self.config.feature_dim:
            raise TrajMoEError(f"city {city.name!r} has {city.features.shape[1]} cell features, the GRU expects "
                               f"{self.config.feature_dim}: prepare the city with this trajmoe version.")
        angle = (city.xy_km.unsqueeze(-1) * self.coord_freq).flatten(1)  # (N, 2 * S)
        return self.cell_mlp(torch.cat([city.features, angle.sin(), angle.cos()], dim=1))  # (N, C)

    def forward(self, batch: Batch, city: CityTensors, *, targets: bool = False) -> BaselineOutput:
        cell_emb = self._cell_emb(city)
        return _output(self._logits(self._states(batch, cell_emb), cell_emb), batch, targets)

    @torch.no_grad()
    def score_last(self, batch: Batch, city: CityTensors) -> torch.Tensor:
        cell_emb = self._cell_emb(city)
        q = self._states(batch, cell_emb)
        last = _last_positions(batch.mask)
        q_last = q.gather(1, last.unsqueeze(-1).expand(-1, -1, q.shape[-1])).squeeze(1)  # (B, C)
        return self._logits(q_last, cell_emb)


# --------------------------------------------------------------------------- runner
# Neural baselines train from scratch for up to NEURAL_EPOCHS epochs, stopping early after
# NEURAL_PATIENCE epochs without validation gain (on the run's few-shot share of validation
# targets); the rest is train.py's TrainConfig default (32 windows of up to 64 visits per step,
# AdamW lr 3e-3, cosine schedule). On nyc_foursquare at 100% (1,623 windows, 51 steps per epoch)
# the GRU's validation Acc@1 still rises until ~epoch 20 (10 epochs: test 0.258, 25: 0.299), so
# 20 epochs is the cap. Measured there with OMP_NUM_THREADS=1 on the shared 2-core CPU, validation
# included: GRU 20 epochs in 4 min (test Acc@1 0.297), dense Transformer early-stopped after 13
# epochs in 11 min (0.349). Two torch threads on a busy 2-core machine ran 4-5x slower.
NEURAL_EPOCHS = 20
NEURAL_PATIENCE = 3


def default_train_config(*, fraction: float = 1.0, seed: int = 0):
    """The TrainConfig neural baselines use unless the caller passes one."""
    from trajmoe.train.fit import TrainConfig

    # A model trained from scratch has no pretrained kind weights (config.pretrained_kinds is empty),
    # so train.fit calibrates its head by plain maximum likelihood, like the return + gravity baseline.
    return TrainConfig(epochs=NEURAL_EPOCHS, patience=NEURAL_PATIENCE, fraction=fraction, seed=seed)


def run_baseline(name: str, data: CityData, *, fraction: float = 1.0, seed: int = 0, progress=None,
                 train_config=None) -> dict:
    """Train baseline ``name`` on a few-shot share of ``data`` and return its test metrics.

    Parameters
    ----------
    name
        One of :data:`BASELINES`.
    data
        A prepared city.
    fraction, seed
        Few-shot share of training windows and validation targets (DESIGN.md §Protocol); the same
        subset every method sees for this (fraction, seed).
    progress
        Optional ``(step, total, loss)`` callback (training steps, or Newton iterations for ``epr``).
    train_config
        TrainConfig for the neural baselines (default :func:`default_train_config`); ``fraction``
        and ``seed`` replace its own, and its ``max_len``, ``use_poi`` and ``eval_batch_size``
        apply to every baseline.

    Returns
    -------
    dict
        ``metrics.metrics_from_ranks`` keys (``acc@1``, ``acc@5``, ``acc@10``, ``mrr``,
        ``ndcg@10``, ``n``) on the test targets, plus ``seconds`` (fit + evaluation wall time) and
        ``steps`` (optimiser steps; passes over the validation targets for ``epr``; 0 for count models).
    """
    from trajmoe.train.fit import evaluate, fit

    if name not in BASELINES:
        raise TrajMoEError(f"Unknown baseline {name!r}: use one of {', '.join(BASELINES)}.")
    if train_config is None:
        cfg = default_train_config(fraction=fraction, seed=seed)
    else:
        cfg = dataclasses.replace(train_config, fraction=fraction, seed=seed)
    start = time.perf_counter()
    subset = run_subset(data, fraction=cfg.fraction, seed=cfg.seed, max_len=cfg.max_len, use_poi=cfg.use_poi)
    if not subset.windows:
        raise TrajMoEError(f"{data.folder} has no training windows: every user needs at least 2 training visits.")
    steps = 0
    if name == "popular":
        model = MostPopular()
    elif name == "markov":
        model = Markov().fit(data, subset.windows)
    elif name == "epr":
        model = ReturnGravity()
        steps = model.fit(data, subset.city, subset.val_targets, max_len=cfg.max_len, progress=progress)["evaluations"]
    else:
        from trajmoe.train.models import new_model

        overrides = {} if name == "gru" else {"max_len": cfg.max_len, "use_poi_features": cfg.use_poi}
        model, _ = new_model(name, seed=cfg.seed, **overrides)
        steps = fit(model, [data], cfg, val_city=data, progress=progress).steps
    metrics = evaluate(model, data, split="test", subset=subset, max_len=cfg.max_len, batch_size=cfg.eval_batch_size)
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    metrics["steps"] = steps
    log.info("%s on %s (fraction %.3g, seed %d): %s", name, data.name, cfg.fraction, cfg.seed, metrics)
    return metrics
