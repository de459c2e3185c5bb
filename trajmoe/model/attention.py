"""The Transformer trunk's pieces: causal self-attention and the block around the SAMoE layer.

nanoGPT's pre-norm block. Attention is causal over a sliding window of ``attn_window`` visits with
rotary positions (relative, so a state depends only on its last visits, not on where the sequence
starts) and a key padding mask; the feed-forward (SAMoE, or the dense FFN of the ``moe=False``
ablation) runs on the real visits only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trajmoe.model.config import TrajMoEConfig
from trajmoe.model.moe import DenseFFN, MoEOutput, SAMoE

ROPE_BASE = 10_000.0  # RoFormer's base (Su et al. 2021)


def rotary(n_t: int, head_dim: int, *, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, head_dim / 2) cos and sin of rotary position angles for positions 0..T-1.

    Rotating queries and keys by their position makes q_t . k_s depend on t - s only (RoFormer,
    Su et al. 2021), so a score does not depend on where its sequence starts.
    """
    inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim)
    angle = torch.arange(n_t, device=device, dtype=torch.float64)[:, None] * inv_freq  # (T, D/2)
    return angle.cos().to(dtype), angle.sin().to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply the rotation to (B, H, T, D): pairs (x_i, x_{i + D/2}) turn by their angle."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def sliding_window_mask(mask: torch.Tensor, window: int) -> torch.Tensor:
    """(B, 1, T, T) bool: query t may see keys s with t - window < s <= t that are real visits.

    Every query also sees itself, so a fully padded row never has all keys masked (SDPA would
    return NaN there).
    """
    n_t = mask.shape[1]
    t = torch.arange(n_t, device=mask.device)
    band = (t[None, :] <= t[:, None]) & (t[None, :] > t[:, None] - window)  # (T, T): [query, key]
    keys = mask.unsqueeze(1) | torch.eye(n_t, dtype=torch.bool, device=mask.device)  # (B, T, T)
    return (band & keys).unsqueeze(1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (nanoGPT) over a sliding window, with rotary positions."""

    def __init__(self, config: TrajMoEConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model)
        self.c_proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        n_b, n_t, n_c = x.shape  # (B, T, C)
        q, k, v = self.c_attn(x).split(n_c, dim=2)
        q, k, v = (z.view(n_b, n_t, self.n_heads, n_c // self.n_heads).transpose(1, 2) for z in (q, k, v))
        q, k = _rotate(q, *rope), _rotate(k, *rope)  # (B, H, T, C/H)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, C/H)
        y = y.transpose(1, 2).contiguous().view(n_b, n_t, n_c)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    """Pre-norm Transformer block: causal attention, then the SAMoE (or dense) feed-forward."""

    def __init__(self, config: TrajMoEConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.ffn = SAMoE(config.moe_config()) if config.moe else DenseFFN(config.moe_config())

    def forward(
        self,
        x: torch.Tensor,
        prior: torch.Tensor | None,
        *,
        attn_mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor,
        city: str,
    ) -> tuple[torch.Tensor, MoEOutput]:
        x = x + self.attn(self.ln_1(x), attn_mask, rope)
        h = self.ln_2(x)  # (B, T, C)
        # Only real visits go through the feed-forward: padding is never routed and never
        # counted in the load-balancing loss.
        res = self.ffn(h[mask], prior[mask] if prior is not None else None, city=city)  # (M, C)
        x = x + h.new_zeros(h.shape).masked_scatter(mask.unsqueeze(-1), res.output)
        return x, res
