"""ORCA's embedders (src/embedder.py): a patch conv → LayerNorm → + learned positions, and the knock-outs
that drop the LayerNorm (`norm=False`) or our positions (`positions=False`).

Shapes: 1D input (B, C, L) → tokens (B, L/s, D); 2D input (B, C, H, W) → resized to S × S → (B, (S/p)², D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..bodies import EmbeddingInit
from .patching import Patching, copy_positions_, init_patch_weight_2d_, stride_for, xavier_patch_init_


def _init_norm(norm: nn.Module, init: EmbeddingInit, aligned: bool) -> None:
    if not isinstance(norm, nn.LayerNorm):  # a knock-out without LayerNorm
        return
    if aligned:
        norm.weight.copy_(init.norm_weight)
        norm.bias.copy_(init.norm_bias)
    else:
        nn.init.ones_(norm.weight)
        nn.init.zeros_(norm.bias)


class Embedder1D(nn.Module):
    """Conv1d(C, D, kernel=s, stride=s) → tokens → LayerNorm(D) → + learned positions.

    Args:
        in_channels: C.
        length: the input's length L.
        embed_dim: D, the body's token width.
        target_seq_len: the most tokens; s = `stride_for(length, target_seq_len)`.
        norm: keep ORCA's LayerNorm (False: the `orca-no-norm` knock-out).
        positions: keep ORCA's learned positions (False: the `orca-no-pos` knock-out).
    """

    def __init__(
        self,
        in_channels: int,
        length: int,
        embed_dim: int,
        target_seq_len: int,
        *,
        norm: bool = True,
        positions: bool = True,
    ):
        super().__init__()
        self.stride = stride_for(length, target_seq_len)
        self.num_tokens = length // self.stride
        self.patching = Patching(in_channels, self.stride, (self.num_tokens,))
        self.projection = nn.Conv1d(in_channels, embed_dim, kernel_size=self.stride, stride=self.stride)
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()
        self.positions = nn.Parameter(torch.zeros(self.num_tokens, embed_dim)) if positions else None
        xavier_patch_init_(self.projection.weight, self.projection.bias)
        if self.positions is not None:
            nn.init.normal_(self.positions, std=0.02)

    def init_from_body(self, init: EmbeddingInit, aligned: bool) -> None:
        """ORCA's embedder_init (src/utils.py) for a 1D embedder: positions from the body's own table either way;
        LayerNorm from the body when the embedder will be aligned (> 0 embedder epochs), else weight 1 / bias 0.
        The conv keeps its Xavier init in both cases (ORCA's fresh init touches Conv2d/Linear only).

        Args:
            init: the body's embedding weights.
            aligned: whether the embedder is trained by the align stage before fine-tuning.
        """
        with torch.no_grad():
            _init_norm(self.norm, init, aligned)
            if self.positions is not None:
                copy_positions_(self.positions, init, strict=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Tokens (B, L/s, D) and the token grid (L/s,).

        Args:
            x: inputs (B, C, L).
        """
        tokens = self.norm(self.projection(x).transpose(1, 2))
        if self.positions is not None:
            tokens = tokens + self.positions
        return tokens, (self.num_tokens,)


class Embedder2D(nn.Module):
    """Resize to the body's image size → Conv2d(C, D, k=p, s=p) → tokens → LayerNorm(D)
    (→ + learned positions for bodies without their own 2D position bias, i.e. text bodies).

    Args:
        in_channels: C.
        embed_dim: D, the body's token width.
        image_size: the side the input is resized to.
        patch_size: p, the conv's kernel and stride.
        learned_positions: add a learned position table (text bodies).
        norm: keep ORCA's LayerNorm (False: the `orca-no-norm` knock-out).
    """

    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        image_size: int,
        patch_size: int,
        learned_positions: bool = False,
        *,
        norm: bool = True,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size = image_size, patch_size
        self.grid = (image_size // patch_size, image_size // patch_size)
        self.patching = Patching(in_channels, patch_size, self.grid, image_size, text_body=learned_positions)
        self.projection = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()
        self.positions = (
            nn.Parameter(torch.zeros(self.grid[0] * self.grid[1], embed_dim)) if learned_positions else None
        )
        xavier_patch_init_(self.projection.weight, self.projection.bias)
        if self.positions is not None:
            nn.init.normal_(self.positions, std=0.02)

    def init_from_body(self, init: EmbeddingInit, aligned: bool) -> None:
        """ORCA's embedder_init (src/utils.py) for a 2D embedder: the conv as `init_patch_weight_2d_` sets it,
        LayerNorm from the body when aligned (else weight 1 / bias 0); learned positions (text bodies only)
        come from the body either way.

        Args:
            init: the body's embedding weights.
            aligned: whether the embedder is trained by the align stage before fine-tuning.
        """
        with torch.no_grad():
            _init_norm(self.norm, init, aligned)
            init_patch_weight_2d_(self.projection.weight, self.projection.bias, init, aligned)
            if self.positions is not None:
                copy_positions_(self.positions, init, strict=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Tokens (B, (S/p)², D) and the token grid (S/p, S/p), S = `image_size`.

        Args:
            x: inputs (B, C, H, W), resized to S x S when they differ.
        """
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        tokens = self.norm(self.projection(x).flatten(2).transpose(1, 2))
        if self.positions is not None:
            tokens = tokens + self.positions
        return tokens, self.grid


def orca_embedder(
    patching: Patching, embed_dim: int, *, norm: bool = True, positions: bool = True
) -> nn.Module:
    """ORCA's embedder for a patching (a knock-out when `norm` or `positions` is False).

    Args:
        patching: the token geometry (`patching_for`).
        embed_dim: D, the body's token width.
        norm: keep the LayerNorm.
        positions: keep our learned positions (1D, and 2D on a text body; Swin bodies have none of ours).
    """
    c = patching.in_channels
    if len(patching.grid) == 1:
        # the token count as budget gives back the same stride: s is the smallest divisor with L/s <= L/s
        return Embedder1D(c, patching.length, embed_dim, patching.grid[0], norm=norm, positions=positions)
    return Embedder2D(
        c,
        embed_dim,
        patching.image_size,
        patching.patch,
        learned_positions=patching.text_body and positions,
        norm=norm,
    )
