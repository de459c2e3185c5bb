"""Spatial semantic encoder: a city's cell features (N, F) -> cell embeddings (N, C).

Shared by all cities: cells are embedded from their features (POI semantics, visit patterns,
coordinates), never by per-city ID tables, so any city with a cell table can be embedded.
"""

from __future__ import annotations

import torch
from torch import nn

from trajmoe.city.features import feature_slices
from trajmoe.errors import PreparedDataError
from trajmoe.model.config import TrajMoEConfig

# Which columns of the ``mask`` feature group switch which groups off (features.py order:
# has_poi, has_visits, weekday_known). Popularity is never masked: its last bucket already says
# "never visited". Groups masked by has_poi are the POI groups the use_poi_features ablation drops.
_MASK_COLUMNS: dict[str, tuple[int, ...]] = {
    "poi_share": (0,),
    "poi_log_count": (0,),
    "ring_poi_share": (0,),
    "ring_poi_log_count": (0,),
    "poi_total": (0,),
    "visit_hour": (1,),
    "visit_weekday": (1, 2),
    "log_visits": (1,),
}
POI_GROUPS = tuple(name for name, cols in _MASK_COLUMNS.items() if cols == (0,))


class CellEncoder(nn.Module):
    """Spatial semantic encoder: cell features (N, F) -> cell embeddings (N, C).

    Each feature group gets its own projection (a missing group, per the ``mask`` group, is
    zeroed after it), then a DCN-v2 cross network models feature interactions such as "many
    offices AND busy at 9am" (Wang et al. 2021), then an MLP and a LayerNorm.
    """

    def __init__(self, config: TrajMoEConfig) -> None:
        super().__init__()
        self.widths = dict(config.feature_groups)
        self.slices = feature_slices(self.widths)
        self.n_features = sum(self.widths.values())
        used = [n for n in self.widths if config.use_poi_features or n not in POI_GROUPS]
        g = config.encoder_group_dim
        self.group_proj = nn.ModuleDict({n: nn.Linear(self.widths[n], g) for n in used})
        width = g * len(used)
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(config.encoder_cross_layers))
        self.mlp = nn.Sequential(nn.Linear(width, 2 * config.d_model), nn.GELU(),
                                 nn.Linear(2 * config.d_model, config.d_model))
        self.ln = nn.LayerNorm(config.d_model)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise PreparedDataError(
                f"cell features have shape {tuple(features.shape)} but this model expects "
                f"(N, {self.n_features}) with groups {self.widths}; prepare the city with the "
                "same trajmoe version as the checkpoint (features.SCHEMA_ID) or retrain"
            )
        mask = features[:, self.slices["mask"]] if "mask" in self.slices else None
        parts = []
        for name, proj in self.group_proj.items():
            part = proj(features[:, self.slices[name]])  # (N, g)
            if mask is not None and name in _MASK_COLUMNS:
                part = part * mask[:, list(_MASK_COLUMNS[name])].prod(dim=1, keepdim=True)
            parts.append(part)
        x0 = torch.cat(parts, dim=-1)  # (N, G * g)
        x = x0
        for layer in self.cross:  # DCN-v2: x_{l+1} = x_0 * (W x_l + b) + x_l
            x = x0 * layer(x) + x
        return self.ln(self.mlp(x))  # (N, C)
