"""Stage 1 of ORCA: task-specific embedder and predictor around a pretrained body, and freeze masks.

    model = build_model(task, load_body("minilm"), aligned=True)
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

from .bodies import Body, EmbeddingInit

PARTS = ("embedder", "body", "predictor")
# how a point predictor reads the body's tokens: ORCA's mean over tokens, or the last token (causal bodies: the
# only token that has seen the whole input)
POOLS = ("mean", "last")


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


def _init_norm(norm: nn.LayerNorm, init: EmbeddingInit, aligned: bool) -> None:
    if aligned:
        norm.weight.copy_(init.norm_weight)
        norm.bias.copy_(init.norm_bias)
    else:
        nn.init.ones_(norm.weight)
        nn.init.zeros_(norm.bias)


def _xavier_conv_(conv: nn.Module) -> None:
    # ORCA's conv_init: Xavier-uniform with gain √2, zero bias
    nn.init.xavier_uniform_(conv.weight, gain=math.sqrt(2.0))
    nn.init.zeros_(conv.bias)


class Embedder1D(nn.Module):
    """Conv1d(C, D, kernel=s, stride=s) → tokens → LayerNorm(D) → + learned positions.

    Args:
        in_channels: C.
        length: the input's length L.
        embed_dim: D, the body's token width.
        target_seq_len: the most tokens; s = `stride_for(length, target_seq_len)`.
    """

    def __init__(self, in_channels: int, length: int, embed_dim: int, target_seq_len: int):
        super().__init__()
        self.stride = stride_for(length, target_seq_len)
        self.num_tokens = length // self.stride
        self.projection = nn.Conv1d(in_channels, embed_dim, kernel_size=self.stride, stride=self.stride)
        self.norm = nn.LayerNorm(embed_dim)
        self.positions = nn.Parameter(torch.zeros(self.num_tokens, embed_dim))
        _xavier_conv_(self.projection)
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
            if init.positions is not None:
                if len(init.positions) < self.num_tokens:
                    raise ValueError(
                        f"the body has {len(init.positions)} positions but the embedder makes "
                        f"{self.num_tokens} tokens; lower target_seq_len"
                    )
                self.positions.copy_(init.positions[: self.num_tokens])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Tokens (B, L/s, D) and the token grid (L/s,).

        Args:
            x: inputs (B, C, L).
        """
        tokens = self.norm(self.projection(x).transpose(1, 2))
        return tokens + self.positions, (self.num_tokens,)


class Embedder2D(nn.Module):
    """Resize to the body's image size → Conv2d(C, D, k=p, s=p) → tokens → LayerNorm(D)
    (→ + learned positions for bodies without their own 2D position bias, i.e. text bodies).

    Args:
        in_channels: C.
        embed_dim: D, the body's token width.
        image_size: the side the input is resized to.
        patch_size: p, the conv's kernel and stride.
        learned_positions: add a learned position table (text bodies).
    """

    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        image_size: int,
        patch_size: int,
        learned_positions: bool = False,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size = image_size, patch_size
        self.grid = (image_size // patch_size, image_size // patch_size)
        self.projection = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)
        self.positions = (
            nn.Parameter(torch.zeros(self.grid[0] * self.grid[1], embed_dim)) if learned_positions else None
        )
        _xavier_conv_(self.projection)
        if self.positions is not None:
            nn.init.normal_(self.positions, std=0.02)

    def init_from_body(self, init: EmbeddingInit, aligned: bool) -> None:
        """ORCA's embedder_init (src/utils.py) for a 2D embedder. Aligned (> 0 embedder epochs): the body's patch
        conv tiled over our input channels (channel c takes the body's channel c mod 3, no rescaling) and its
        bias, LayerNorm from the body. Not aligned: the conv trunc-normal(std 0.02) with zero bias, LayerNorm
        weight 1 / bias 0. Learned positions (text bodies only) come from the body either way.

        Args:
            init: the body's embedding weights.
            aligned: whether the embedder is trained by the align stage before fine-tuning.
        """
        with torch.no_grad():
            _init_norm(self.norm, init, aligned)
            conv = self.projection
            w = init.patch_weight
            if not aligned:
                nn.init.trunc_normal_(conv.weight, std=0.02)
                nn.init.zeros_(conv.bias)
            elif (
                w is not None
                and w.shape[0] == conv.out_channels
                and w.shape[-2] >= conv.kernel_size[0]
                and w.shape[-1] >= conv.kernel_size[1]
            ):
                c = conv.in_channels
                tiled = torch.cat([w] * (c // w.shape[1] + 1), dim=1)
                conv.weight.copy_(tiled[:, :c, : conv.kernel_size[0], : conv.kernel_size[1]])
                conv.bias.copy_(init.patch_bias)
            if self.positions is not None and init.positions is not None:
                n = len(self.positions)
                if len(init.positions) >= n:
                    self.positions.copy_(init.positions[:n])

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
        embedder: `Embedder1D` or `Embedder2D` (`build_embedder`).
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


def build_embedder(task, body: Body, *, aligned: bool, target_seq_len: int | None = None) -> nn.Module:
    """The embedder for a task's input shape and a body, initialised as ORCA does (see `init_from_body`).
    1D tasks need a sequence body (text); 2D tasks take either: a Swin body sees a (S/4)² patch grid at its own
    image size, a text body sees a patch grid sized so the tokens fit its positions (`target_seq_len`, default 64).

    Args:
        task: anything with modality, input_shape (a Task).
        body: the body the embedder feeds.
        aligned: True when the embedder will be aligned (> 0 embedder epochs): ORCA then starts it from the
            body's embedding; False gives ORCA's fresh init.
        target_seq_len: 1D token budget (ORCA's target_seq_len); default 64.
    """
    if task.modality == "1d":
        if body.modality != "1d":
            raise ValueError(
                f"1D task {task.name!r} needs a sequence (text) body, got the image body {body.name!r}; "
                "use e.g. --body minilm or roberta-base"
            )
        c, length = task.input_shape
        limit = target_seq_len or 64
        if body.max_tokens is not None and limit > body.max_tokens:
            raise ValueError(
                f"target_seq_len {limit} exceeds the {body.max_tokens} positions of body {body.name!r}"
            )
        emb = Embedder1D(c, length, body.embed_dim, limit)
    else:
        c, h, w = task.input_shape
        if body.modality == "2d":
            emb = Embedder2D(c, body.embed_dim, body.image_size, body.patch_size)
        else:
            limit = min(target_seq_len or 64, body.max_tokens or 64)
            # patches of at least 2×2 pixels: a one-pixel token is a single scalar, which LayerNorm reduces
            # to its sign, drowned by the position embedding
            patch = max(2, math.ceil(max(h, w) / max(1, math.isqrt(limit))))
            side = math.ceil(max(h, w) / patch)  # tokens per side
            emb = Embedder2D(c, body.embed_dim, patch * side, patch, learned_positions=True)
    emb.init_from_body(body.embedding_init, aligned)
    return emb


def build_predictor(task, body: Body, embedder: nn.Module, pool: str = "mean") -> nn.Module:
    """Pool + Linear for point tasks; ORCA's Swin decoder for dense tasks on a Swin body; otherwise a
    per-token linear head shuffled back to the input grid.

    Args:
        task: the target task (kind, num_outputs, output_shape).
        body: the body the predictor reads.
        embedder: the task's embedder (its stride or patch size sets the dense head's upscale).
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
    stride = embedder.stride if isinstance(embedder, Embedder1D) else embedder.patch_size
    return DensePredictor(body.out_dim, task.num_outputs, task.output_shape, stride)


def build_model(
    task,
    body: Body,
    *,
    aligned: bool,
    target_seq_len: int | None = None,
    seed: int | None = None,
    pool: str = "mean",
) -> ORCAModel:
    """Embedder + predictor for `task` around `body`.

    Args:
        task: the target task.
        body: the body.
        aligned: whether the embedder will be aligned (> 0 embedder epochs); decides its init (ORCA).
        target_seq_len: 1D token budget.
        seed: makes the fresh layers' init reproducible.
        pool: how a point predictor pools the body's tokens (POOLS).
    """
    if task.modality == "2d" and not body.takes_2d_tasks:
        raise ValueError(
            f"2D task {task.name!r}: body {body.name!r} ({body.family}) takes 1D tasks only; use a Swin or "
            "encoder body for images"
        )
    if seed is not None:
        torch.manual_seed(seed)
    embedder = build_embedder(task, body, aligned=aligned, target_seq_len=target_seq_len)
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
