"""The study's "much simpler method of converting dimensions": each patch flattened → one Linear to the body's
width. Same patches as ORCA (`Patching`), no LayerNorm, no learned positions of ours, so the body sees the
projected patches and nothing else (a text body's own positions are bypassed, as for every kind).

ORCA's 1D conv with kernel = stride is itself a linear map per patch; what `linear` removes is the LayerNorm
and the positions (and, in 2D, nothing else). Its weight is drawn and initialised as ORCA's conv
(`xavier_patch_init_`, `init_patch_weight_2d_`), so a comparison with `orca` measures those parts alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..bodies import EmbeddingInit
from .patching import Patching, init_patch_weight_2d_, xavier_patch_init_


class LinearEmbedder(nn.Module):
    """Patches (C · s values in 1D, C · p² in 2D, in the conv's weight order) → Linear(·, D).

    Args:
        patching: the token geometry (`patching_for`).
        embed_dim: D, the body's token width.
    """

    def __init__(self, patching: Patching, embed_dim: int):
        super().__init__()
        self.patching = patching
        self.kernel = (patching.patch,) * len(patching.grid)
        self.projection = nn.Linear(patching.in_channels * patching.patch ** len(patching.grid), embed_dim)
        xavier_patch_init_(self._conv_shaped(), self.projection.bias)

    def _conv_shaped(self) -> torch.Tensor:
        # the weight seen as ORCA's conv weight (D, C, *k): same fans, same draws, same tiling of the body's conv
        d = self.projection.out_features
        return self.projection.weight.view(d, self.patching.in_channels, *self.kernel)

    def init_from_body(self, init: EmbeddingInit, aligned: bool) -> None:
        """ORCA's embedder_init for the projection alone (no LayerNorm, no positions to take from the body): 2D
        as `init_patch_weight_2d_` sets a conv; 1D keeps its Xavier init, as ORCA's 1D conv does.

        Args:
            init: the body's embedding weights.
            aligned: whether the embedder is trained by the align stage before fine-tuning.
        """
        if len(self.patching.grid) == 2:
            with torch.no_grad():
                init_patch_weight_2d_(self._conv_shaped(), self.projection.bias, init, aligned)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Tokens (B, N, D) and the token grid, as ORCA's embedder of the same patching gives.

        Args:
            x: inputs (B, C, L) or (B, C, H, W) (resized to the patching's image size when they differ).
        """
        p = self.patching
        if len(p.grid) == 1:
            b, c, _ = x.shape
            patches = x.unfold(2, p.patch, p.patch).permute(0, 2, 1, 3).reshape(b, p.grid[0], c * p.patch)
        else:
            if x.shape[-2:] != (p.image_size, p.image_size):
                x = F.interpolate(x, size=(p.image_size, p.image_size), mode="bilinear", align_corners=False)
            patches = F.unfold(x, kernel_size=p.patch, stride=p.patch).transpose(1, 2)
        return self.projection(patches), p.grid
