"""The Transformer trunk's pieces: causal self-attention and the block around the SAMoE layer.

nanoGPT's pre-norm block, with a key padding mask in attention and the feed-forward (SAMoE, or
the dense FFN of the ``moe=False`` ablation) applied to the real visits only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trajmoe.model.config import TrajMoEConfig
from trajmoe.model.moe import DenseFFN, MoEOutput, SAMoE


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (nanoGPT) with a key padding mask."""

    def __init__(self, config: TrajMoEConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model)
        self.c_proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        n_b, n_t, n_c = x.shape  # (B, T, C)
        q, k, v = self.c_attn(x).split(n_c, dim=2)
        q, k, v = (z.view(n_b, n_t, self.n_heads, n_c // self.n_heads).transpose(1, 2) for z in (q, k, v))
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
        mask: torch.Tensor,
        city: str,
    ) -> tuple[torch.Tensor, MoEOutput]:
        x = x + self.attn(self.ln_1(x), attn_mask)
        h = self.ln_2(x)  # (B, T, C)
        # Only real visits go through the feed-forward: padding is never routed and never
        # counted in the load-balancing loss.
        res = self.ffn(h[mask], prior[mask] if prior is not None else None, city=city)  # (M, C)
        x = x + h.new_zeros(h.shape).masked_scatter(mask.unsqueeze(-1), res.output)
        return x, res
