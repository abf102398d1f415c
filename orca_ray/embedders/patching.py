"""How an input is cut into tokens, shared by every embedder kind: ORCA's 1D stride and 2D patch grid.

    patching = patching_for(task, body, target_seq_len=64)   # Patching(in_channels=1, patch=1, grid=(46,), ...)

Every kind sees the same patches (so a kind changes what is done to a patch, never which pixels form it), and
the init helpers here are ORCA's embedder_init (src/utils.py) for the patch projection, shared by the conv of
`orca` and the Linear of `linear`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..bodies import Body, EmbeddingInit

DEFAULT_TARGET_SEQ_LEN = 64


def stride_for(length: int, target_seq_len: int) -> int:
    """ORCA's 1D stride: the smallest divisor s of `length` with length / s <= target_seq_len.
    (Satellite 46 → 1 at 64; DeepSEA 1000 → 2 at 512; ECG 1000 → 20 at 64.)

    Args:
        length: the input's length L.
        target_seq_len: the most tokens the embedder may make.
    """
    if length < 1 or target_seq_len < 1:
        raise ValueError(f"length and target_seq_len must be positive, got {length}, {target_seq_len}")
    return next(s for s in range(1, length + 1) if length % s == 0 and length // s <= target_seq_len)


@dataclass(frozen=True)
class Patching:
    """The token geometry of one task on one body.

    Args:
        in_channels: C, the task's input channels.
        patch: input cells per token along each axis (1D: ORCA's stride s; 2D: the patch side p).
        grid: the token grid, (L/s,) or (S/p, S/p).
        image_size: 2D only: the side S inputs are resized to (None for 1D).
        text_body: the body is a sequence (text) body: it has no 2D position bias of its own, so ORCA's 2D
            embedder adds learned positions for it.
    """

    in_channels: int
    patch: int
    grid: tuple[int, ...]
    image_size: int | None = None
    text_body: bool = True

    @property
    def num_tokens(self) -> int:
        """Tokens per input: the product of the grid."""
        return math.prod(self.grid)

    @property
    def length(self) -> int:
        """1D only: the input length L = s · L/s."""
        return self.patch * self.grid[0]


def patching_for(task, body: Body, target_seq_len: int | None = None) -> Patching:
    """ORCA's patching of a task for a body. 1D tasks need a sequence body (text); 2D tasks take either: a Swin
    body sees a (S/4)² patch grid at its own image size, a text body a patch grid sized so the tokens fit its
    positions (`target_seq_len`, default 64).

    Args:
        task: anything with name, modality, input_shape (a Task).
        body: the body the embedder feeds.
        target_seq_len: 1D token budget (ORCA's target_seq_len); default 64.
    """
    if task.modality == "1d":
        if body.modality != "1d":
            raise ValueError(
                f"1D task {task.name!r} needs a sequence (text) body, got the image body {body.name!r}; "
                "use e.g. --body minilm or roberta-base"
            )
        c, length = task.input_shape
        limit = target_seq_len or DEFAULT_TARGET_SEQ_LEN
        s = stride_for(length, limit)
        # the tokens the body sees must fit its positions; the budget may exceed them (Satellite's 512 gives
        # 46 tokens)
        if body.max_tokens is not None and length // s > body.max_tokens:
            raise ValueError(
                f"task {task.name!r}: {length // s} tokens (length {length}, target_seq_len {limit}) exceed the "
                f"{body.max_tokens} positions of body {body.name!r}; set a target_seq_len <= {body.max_tokens}"
            )
        return Patching(c, s, (length // s,))
    c, h, w = task.input_shape
    if body.modality == "2d":
        side = body.image_size // body.patch_size
        return Patching(c, body.patch_size, (side, side), body.image_size, text_body=False)
    limit = min(target_seq_len or DEFAULT_TARGET_SEQ_LEN, body.max_tokens or DEFAULT_TARGET_SEQ_LEN)
    # patches of at least 2×2 pixels: a one-pixel token is a single scalar, which LayerNorm reduces to its
    # sign, drowned by the position embedding
    patch = max(2, math.ceil(max(h, w) / max(1, math.isqrt(limit))))
    side = math.ceil(max(h, w) / patch)  # tokens per side
    return Patching(c, patch, (side, side), patch * side, text_body=True)


def xavier_patch_init_(weight: torch.Tensor, bias: torch.Tensor) -> None:
    """ORCA's conv_init: Xavier-uniform with gain √2, zero bias. `weight` is shaped as the conv's (D, C, *k),
    so the fans (and the random draws) are the conv's whichever layer holds the weight.

    Args:
        weight: the projection weight, conv-shaped (a view of a Linear's weight works too).
        bias: its bias.
    """
    nn.init.xavier_uniform_(weight, gain=math.sqrt(2.0))
    nn.init.zeros_(bias)


def init_patch_weight_2d_(
    weight: torch.Tensor, bias: torch.Tensor, init: EmbeddingInit, aligned: bool
) -> None:
    """ORCA's embedder_init for a 2D patch projection. Aligned (> 0 embedder epochs): the body's patch conv
    tiled over our input channels (channel c takes the body's channel c mod 3, no rescaling) and its bias, when
    the body has one that fits. Not aligned: trunc-normal(std 0.02) with zero bias.

    Args:
        weight: the projection weight, conv-shaped (D, C, p, p) (a view of a Linear's weight works too).
        bias: its bias (D,).
        init: the body's embedding weights.
        aligned: whether the embedder is trained by the align stage before fine-tuning.
    """
    w = init.patch_weight
    d, c, kh, kw = weight.shape
    if not aligned:
        nn.init.trunc_normal_(weight, std=0.02)
        nn.init.zeros_(bias)
    elif w is not None and w.shape[0] == d and w.shape[-2] >= kh and w.shape[-1] >= kw:
        tiled = torch.cat([w] * (c // w.shape[1] + 1), dim=1)
        weight.copy_(tiled[:, :c, :kh, :kw])
        bias.copy_(init.patch_bias)


def copy_positions_(positions: nn.Parameter, init: EmbeddingInit, *, strict: bool) -> None:
    """The body's own learned positions into ours (ORCA copies them whether or not the embedder is aligned).

    Args:
        positions: our table (N, D).
        init: the body's embedding weights.
        strict: fail when the body has fewer than N positions (1D); else leave ours as drawn (2D).
    """
    if init.positions is None:
        return
    n = len(positions)
    if len(init.positions) < n:
        if strict:
            raise ValueError(
                f"the body has {len(init.positions)} positions but the embedder makes {n} tokens; "
                "lower target_seq_len"
            )
        return
    positions.copy_(init.positions[:n])
