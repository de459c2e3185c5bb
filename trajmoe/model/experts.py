"""The feed-forward experts of a SAMoE layer: one expert MLP, and the E routed experts run together.

:class:`Expert` is one GELU MLP (the shared expert, and the layout of each routed expert).
:class:`RoutedExperts` holds the E routed experts' weights stacked, so the tokens sorted by expert
run through all of them in one grouped matmul per projection (``F.grouped_mm``) where that pays
off, or one matmul pair per expert slice; its state dict keeps one key per expert, so checkpoints
written before the stacking still load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Expert(nn.Module):
    """One feed-forward expert: Linear -> GELU -> Linear (nanoGPT's MLP).

    Bias-free, as the experts of Mixtral / Qwen2-MoE / DeepSeek: a bias adds one gradient
    reduction per expert and layer for nothing a pre-norm residual block needs.
    """

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(d_model, hidden, bias=False)
        self.c_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class StackedLinear(nn.Module):
    """``n`` bias-free linear maps of one shape in one weight: map e is ``weight[e]`` (out, in).

    Initialised N(0, 0.02) as nanoGPT / HF initialise every Linear: TrajMoE's ``_init_weights``
    only visits ``nn.Linear``, and its GPT-2 residual scaling finds ``...c_proj.weight`` by name.
    """

    def __init__(self, n: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, out_features, in_features))
        nn.init.normal_(self.weight, std=0.02)

    def extra_repr(self) -> str:
        n, out_features, in_features = self.weight.shape
        return f"{n} x (in_features={in_features}, out_features={out_features})"


# The grouped GEMM writes all experts' hidden activations, (N, H), before GELU reads them back;
# once they outgrow the cache, one matmul pair per expert slice (whose hidden stays small) is
# faster and its per-expert op overhead no longer matters. Measured with bench/moe_dispatch.py's
# layer on 2 Xeon cores (2 MiB L2 each): grouped 7-10% faster up to ~1.5k tokens per thread,
# 10-15% slower at 8k tokens; 6 MiB per intra-op thread sits at the crossover.
_GROUPED_MAX_HIDDEN_BYTES = 6 * 2**20


def grouped_mm_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether to run the experts of ``x`` (N, C) as one ``F.grouped_mm``: torch >= 2.9 on CPU in
    float32/bfloat16 (its CUDA and meta kernels want bfloat16 only), every row 16-byte aligned,
    and the (N, H) hidden activations within the cache budget above."""
    aligned = all(n * x.element_size() % 16 == 0 for n in weight.shape[1:])
    hidden_bytes = x.shape[0] * weight.shape[1] * x.element_size()
    return (hasattr(F, "grouped_mm") and x.device.type == "cpu" and aligned
            and x.dtype == weight.dtype and x.dtype in (torch.float32, torch.bfloat16)
            and hidden_bytes <= _GROUPED_MAX_HIDDEN_BYTES * torch.get_num_threads())


class RoutedExperts(nn.Module):
    """The E routed experts (each an :class:`Expert`) with stacked weights, run as one grouped GEMM.

    ``forward(x, counts)`` takes the tokens sorted by expert, (N, C), and the number of rows of
    each expert, (E,); it returns each expert's output on its own rows, (N, C).

    The state dict keeps one entry per expert (``0.c_fc.weight`` ...), the layout of a ModuleList
    of :class:`Expert`: checkpoints from before the stacking load strictly and vice versa.
    """

    def __init__(self, n_experts: int, d_model: int, hidden: int) -> None:
        super().__init__()
        self.n_experts = n_experts
        self.c_fc = StackedLinear(n_experts, d_model, hidden)  # weight (E, H, C)
        self.c_proj = StackedLinear(n_experts, hidden, d_model)  # weight (E, C, H)
        self.register_state_dict_post_hook(_unstack_expert_weights)
        self.register_load_state_dict_pre_hook(_stack_expert_weights)

    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        w_fc, w_proj = self.c_fc.weight, self.c_proj.weight
        if grouped_mm_applies(x, w_fc):
            # Expert e gets rows offs[e-1]:offs[e]; an expert without tokens an empty group. The
            # grouped backward needs a dense output gradient: the caller's top-k weighting gives it.
            offs = counts.cumsum(0).to(torch.int32)
            h = F.gelu(F.grouped_mm(x, w_fc.transpose(1, 2), offs=offs))  # (N, H)
            return F.grouped_mm(h, w_proj.transpose(1, 2), offs=offs)  # (N, C)
        # Large batches, other dtypes/devices: one expert slice at a time, skipping empty ones.
        sizes = counts.tolist()
        slices = zip(x.split(sizes), w_fc.unbind(), w_proj.unbind(), strict=True)
        outs = [F.linear(F.gelu(F.linear(chunk, fc)), proj) for chunk, fc, proj in slices if len(chunk)]
        return torch.cat(outs) if outs else torch.zeros_like(x)


_EXPERT_WEIGHTS = ("c_fc", "c_proj")


def _unstack_expert_weights(module: RoutedExperts, state: dict, prefix: str, _meta: dict) -> None:
    """State-dict post-hook: ``c_fc.weight`` (E, H, C) -> ``0.c_fc.weight`` (H, C), ... per expert.

    Copies, not views: safetensors refuses tensors that share memory.
    """
    stacked = {name: state.pop(f"{prefix}{name}.weight") for name in _EXPERT_WEIGHTS}
    for e in range(module.n_experts):
        for name, weight in stacked.items():
            state[f"{prefix}{e}.{name}.weight"] = weight.detach()[e].clone()


def _stack_expert_weights(module: RoutedExperts, state: dict, prefix: str, *_args) -> None:
    """Load-state-dict pre-hook: per-expert ``e.c_fc.weight`` entries -> one stacked ``c_fc.weight``.

    Only when every expert's entry is there with one shape; otherwise the entries stay and a strict
    load names them (unexpected) and the stacked weight (missing).
    """
    for name in _EXPERT_WEIGHTS:
        keys = [f"{prefix}{e}.{name}.weight" for e in range(module.n_experts)]
        if all(k in state for k in keys) and len({state[k].shape for k in keys}) == 1:
            state[f"{prefix}{name}.weight"] = torch.stack([state.pop(k) for k in keys])
