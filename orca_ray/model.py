"""Stage 1 of ORCA: predictors, the model (embedder → body → predictor) and freeze masks. The embedder kinds
live in `orca_ray.embedders`.

    model = build_model(task, load_body("minilm"), aligned=True)                     # ORCA's embedder
    model = build_model(task, load_body("minilm"), aligned=True, embedder="linear")  # any registered kind
    apply_freeze(model, frozen={"body"})      # embedder + predictor train, the body stays bit-identical

Knows nothing of Ray. Shapes: 1D input (B, C, L) → tokens (B, L/s, D); 2D input (B, C, H, W) → resized to
the body's image size → (B, (S/p)², D) tokens on an (S/p, S/p) grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .bodies import Body
from .embedders import DEFAULT_EMBEDDER, build_embedder

PARTS = ("embedder", "body", "predictor")
# how a point predictor reads the body's tokens: ORCA's mean over tokens, or the last token (causal bodies: the
# only token that has seen the whole input)
POOLS = ("mean", "last")


class PointPredictor(nn.Module):
    """Mean over tokens (or the last token) → Linear(D, K).

    Args:
        dim: D, the body's output token width.
        num_outputs: K.
        pool: "mean" (ORCA) or "last" (see POOLS).
    """

    def __init__(self, dim: int, num_outputs: int, pool: str = "mean"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.pool = pool
        self.linear = nn.Linear(dim, num_outputs)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Outputs (B, K).

        Args:
            tokens: the body's tokens (B, N, D).
            grid: the token grid (unused: the tokens are pooled).
        """
        return self.linear(tokens[:, -1] if self.pool == "last" else tokens.mean(1))


class DensePredictor(nn.Module):
    """Per-token Linear(D, r^k · C) → pixel-shuffle each token back to its r (×r) input cells → resize to the
    output grid. r is the body's total stride, so the shuffled map covers the (resized) input.

    Args:
        dim: D, the body's output token width.
        out_channels: C, output channels of the task.
        output_shape: the output grid, (L,) or (H, W).
        stride: r.
    """

    def __init__(self, dim: int, out_channels: int, output_shape: tuple[int, ...], stride: int):
        super().__init__()
        self.out_channels, self.output_shape, self.stride = out_channels, tuple(output_shape), stride
        self.linear = nn.Linear(dim, out_channels * stride ** len(self.output_shape))

    def forward(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Outputs (B, C, *output_shape), the channel axis dropped when C = 1.

        Args:
            tokens: the body's tokens (B, N, D).
            grid: the token grid, (N,) or (h, w) with h·w = N.
        """
        b, r, c = tokens.shape[0], self.stride, self.out_channels
        y = self.linear(tokens)
        if len(grid) == 2:
            y = y.transpose(1, 2).reshape(b, c * r * r, grid[0], grid[1])
            y = F.pixel_shuffle(y, r)
            mode = "bilinear"
        else:
            y = y.reshape(b, grid[0], c, r).permute(0, 2, 1, 3).reshape(b, c, grid[0] * r)
            mode = "linear"
        if tuple(y.shape[2:]) != self.output_shape:
            y = F.interpolate(y, size=self.output_shape, mode=mode, align_corners=False)
        return y[:, 0] if c == 1 else y


class SwinDenseDecoder(nn.Module):
    """ORCA's dense head on a Swin body (Darcy): transformers' SwinForMaskedImageModeling decoder -- a 1x1 conv
    to r²·C_img channels and PixelShuffle(r), r = the body's encoder stride, C_img its image channels (3) --
    then ORCA's predictor: adaptive average over the channels down to the task's output channels (1: the
    channel mean) and an adaptive average pool to the output grid (85x85 for Darcy).

    Args:
        dim: the body's output token width.
        out_channels: output channels of the task (1 for Darcy).
        output_shape: the output grid (H, W).
        upscale: r.
        image_channels: C_img.
    """

    def __init__(
        self,
        dim: int,
        out_channels: int,
        output_shape: tuple[int, int],
        upscale: int,
        image_channels: int = 3,
    ):
        super().__init__()
        self.out_channels, self.output_shape, self.upscale = out_channels, tuple(output_shape), upscale
        self.conv = nn.Conv2d(dim, upscale**2 * image_channels, kernel_size=1)
        # transformers' Swin init (initializer_range 0.02); the decoder is not in the pretrained checkpoint
        nn.init.normal_(self.conv.weight, std=0.02)
        nn.init.zeros_(self.conv.bias)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Outputs (B, C, H, W), the channel axis dropped when C = 1.

        Args:
            tokens: the Swin body's tokens (B, N, D) on a square grid.
            grid: the token grid (unused: the grid is taken as floor(√N) squared, as transformers does).
        """
        b, n, d = tokens.shape
        side = math.isqrt(n)  # transformers reshapes to floor(sqrt(n)) squared, as ORCA's Swin grids are
        y = tokens.transpose(1, 2).reshape(b, d, side, side)
        y = F.pixel_shuffle(self.conv(y), self.upscale)  # (b, C_img, side·r, side·r)
        h, w = y.shape[-2:]
        y = F.adaptive_avg_pool1d(y.flatten(2).transpose(1, 2), self.out_channels)  # over channels
        y = y.transpose(1, 2).reshape(b, self.out_channels, h, w)
        y = F.adaptive_avg_pool2d(y, self.output_shape)
        return y[:, 0] if self.out_channels == 1 else y


class ORCAModel(nn.Module):
    """embedder → body (its own embedding layer bypassed) → predictor.

    Args:
        embedder: an embedder of any kind (`embedders.build_embedder`).
        body: the pretrained body.
        predictor: the head (`build_predictor`).
    """

    def __init__(self, embedder: nn.Module, body: Body, predictor: nn.Module):
        super().__init__()
        self.embedder, self.body, self.predictor = embedder, body, predictor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The predictor's outputs for a batch of task inputs.

        Args:
            x: inputs (B, *task.input_shape).
        """
        tokens, grid = self.embedder(x)
        tokens, grid = self.body(tokens, grid)
        return self.predictor(tokens, grid)

    def part(self, name: str) -> nn.Module:
        """One of the three parts by name.

        Args:
            name: "embedder", "body" or "predictor".
        """
        if name not in PARTS:
            raise ValueError(f"unknown model part {name!r}; parts are {PARTS}")
        return getattr(self, name)


def build_predictor(task, body: Body, embedder: nn.Module, pool: str = "mean") -> nn.Module:
    """Pool + Linear for point tasks; ORCA's Swin decoder for dense tasks on a Swin body; otherwise a
    per-token linear head shuffled back to the input grid.

    Args:
        task: the target task (kind, num_outputs, output_shape).
        body: the body the predictor reads.
        embedder: the task's embedder (its patching's stride or patch size sets the dense head's upscale).
        pool: point tasks: "mean" over tokens (ORCA) or the "last" token.
    """
    if not task.dense:
        return PointPredictor(body.out_dim, task.num_outputs, pool)
    if not body.keeps_token_grid:
        raise ValueError(
            f"dense task {task.name!r} needs one output token per input token; body {body.name!r} answers with "
            "its decoder's queries: use its encoder (e.g. t5-base-encoder)"
        )
    if body.modality == "2d" and len(task.output_shape) == 2:
        return SwinDenseDecoder(
            body.out_dim, task.num_outputs, task.output_shape, body.decoder_stride, body.image_channels
        )
    return DensePredictor(body.out_dim, task.num_outputs, task.output_shape, embedder.patching.patch)


def build_model(
    task,
    body: Body,
    *,
    aligned: bool,
    target_seq_len: int | None = None,
    seed: int | None = None,
    pool: str = "mean",
    embedder: str = DEFAULT_EMBEDDER,
) -> ORCAModel:
    """Embedder + predictor for `task` around `body`.

    Args:
        task: the target task.
        body: the body.
        aligned: whether the embedder will be aligned (> 0 embedder epochs); decides its init (ORCA).
        target_seq_len: 1D token budget.
        seed: makes the fresh layers' init reproducible.
        pool: how a point predictor pools the body's tokens (POOLS).
        embedder: the embedder kind (`embedders.EMBEDDERS`).
    """
    if task.modality == "2d" and not body.takes_2d_tasks:
        raise ValueError(
            f"2D task {task.name!r}: body {body.name!r} ({body.family}) takes 1D tasks only; use a Swin or "
            "encoder body for images"
        )
    if seed is not None:
        torch.manual_seed(seed)
    embedder = build_embedder(task, body, aligned=aligned, target_seq_len=target_seq_len, kind=embedder)
    return ORCAModel(embedder, body, build_predictor(task, body, embedder, pool))


# ---- freeze masks ----------------------------------------------------------------------------------------
def parse_freeze(freeze: str | Iterable[str]) -> frozenset[str]:
    """ "none" | "embedder" | "body" | "embedder+body" | ... → the set of frozen parts.

    Args:
        freeze: '+'- (or ',')-joined part names, "none", or an iterable of part names.
    """
    parts = [p for p in freeze.replace(",", "+").split("+") if p] if isinstance(freeze, str) else list(freeze)
    frozen = frozenset(p.strip() for p in parts) - {"none"}
    unknown = frozen - set(PARTS)
    if unknown:
        raise ValueError(
            f"unknown part(s) {sorted(unknown)} in freeze={freeze!r}; use '+'-joined names from {PARTS}"
            " or 'none'"
        )
    if frozen == set(PARTS):
        raise ValueError("freeze names every part: nothing would train")
    return frozen


def freeze_label(frozen: Iterable[str]) -> str:
    """Canonical text of a freeze mask ("none", "embedder", "body", "embedder+body", ...).

    Args:
        frozen: the frozen part names.
    """
    parts = [p for p in PARTS if p in set(frozen)]
    return "+".join(parts) if parts else "none"


def apply_freeze(model: ORCAModel, frozen: Iterable[str]) -> None:
    """Frozen parts get requires_grad=False (and are left out of the optimiser by `trainable_parameters`).

    Args:
        model: the model, changed in place.
        frozen: the part names to freeze; the others are made trainable.
    """
    frozen = set(frozen)
    for name in PARTS:
        for p in model.part(name).parameters():
            p.requires_grad_(name not in frozen)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimiser gets: those with requires_grad.

    Args:
        model: the model (after `apply_freeze`).
    """
    return [p for p in model.parameters() if p.requires_grad]


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what training can change: a checkpoint of a frozen-body trial does not store the body again.

    Args:
        model: the model; its trainable parameters are copied to CPU.
    """
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}
