"""What every body family returns: a `Body` (an encoder fed with embedded tokens) and its `EmbeddingInit`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class BodyNotFoundError(RuntimeError):
    """A body that is neither a local folder, nor in the local cache, nor reachable on the hub."""


@dataclass(frozen=True)
class EmbeddingInit:
    """The body's own input-embedding weights that ORCA starts the embedder from.

    Families without an embedding LayerNorm (GPT-2, Pythia, T5) give weight 1 / bias 0, so the embedder's
    LayerNorm starts as a plain normalisation; families whose positions live inside attention (Pythia's rotary,
    T5's relative bias) give a zero table, so the embedder's learned positions start adding nothing and the body
    keeps its own positions.
    """

    norm_weight: torch.Tensor
    norm_bias: torch.Tensor
    positions: torch.Tensor | None = None  # (max_tokens, D) text bodies: learned absolute positions
    patch_weight: torch.Tensor | None = None  # (D, 3, p, p) image bodies: the patch-embedding conv
    patch_bias: torch.Tensor | None = None


def identity_norm_init(dim: int, positions: torch.Tensor | None) -> EmbeddingInit:
    """The init of a body with no embedding LayerNorm: weight 1, bias 0, and `positions` as given.

    Args:
        dim: the body's token width.
        positions: the body's absolute position table (rows from position 0), or None.
    """
    return EmbeddingInit(norm_weight=torch.ones(dim), norm_bias=torch.zeros(dim), positions=positions)


class Body(nn.Module):
    """A transformer fed with embedded tokens. Subclasses set:
    modality ("1d" text-like sequence of tokens, or "2d" image-like grid), embed_dim (input token width),
    out_dim (output token width), and for 2d bodies image_size / patch_size / output_stride."""

    modality: str
    embed_dim: int
    out_dim: int
    family: str = ""
    causal: bool = False  # each output token sees only the tokens before it (decoder-only bodies)
    takes_2d_tasks: bool = True  # text bodies of the study also embed image patches; the new families do not
    keeps_token_grid: bool = True  # output token i belongs to input token i (dense heads need it)
    max_tokens: int | None = None
    image_size: int | None = None
    patch_size: int | None = None
    output_stride: int = (
        1  # input pixels (2d) per output token along one side, relative to patch tokens × patch
    )
    decoder_stride: int | None = (
        None  # 2d: PixelShuffle factor of ORCA's dense decoder (Swin's encoder_stride)
    )
    image_channels: int = 3  # 2d: channels of the body's own image input (the dense decoder's output)
    name: str = ""
    pretraining_tokens: float | None = None
    init_seed: int = 0  # the seed a randomly initialised body was drawn with
    embedding_init: EmbeddingInit

    def forward(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> tuple[torch.Tensor, tuple[int, ...]]:
        """The encoder's output tokens (B, N', out_dim) and their grid.

        Args:
            tokens: embedded tokens (B, N, embed_dim) from the embedder.
            grid: the token grid, (N,) or (h, w).
        """
        raise NotImplementedError


class PassThroughEmbeddings(nn.Module):
    """Stands in for a text model's embedding layer: returns `inputs_embeds` untouched, so the word,
    position and token-type embeddings (and their LayerNorm) are bypassed, as in ORCA."""

    def forward(self, input_ids=None, inputs_embeds=None, **kwargs):
        if inputs_embeds is None:
            raise ValueError(
                "this body takes embedded tokens only (inputs_embeds); its word embeddings are removed"
            )
        return inputs_embeds


class ZeroPositions(nn.Module):
    """Stands in for a learned absolute position table inside a model's forward (GPT-2's wpe, BART's encoder
    positions): adds nothing, because the embedder already added positions started from that table.

    Args:
        dim: the token width.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, ids: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return torch.zeros((*ids.shape, self.dim), device=ids.device)
