"""Swin bodies, from transformers (SwinModel) or timm (SwinTransformer), fed with patch tokens.

    load_body("swin-base")              # microsoft/swin-base-patch4-window7-224-in22k (transformers)
    load_body("timm:swin_base_patch4_window7_224.ms_in22k")          # timm, HF cache
    load_body("timm:swin_base_patch4_window7_224@/models/swin.safetensors")  # timm, local weights

The embedder starts from the body's patch-embedding conv and its LayerNorm (ORCA).
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from .base import Body, BodyNotFoundError, EmbeddingInit
from .hub import cached, hub_unreachable, offline
from .registry import Family, register_alias, register_family

register_alias(
    "swin-base",
    "microsoft/swin-base-patch4-window7-224-in22k",
    config={"model_type": "swin", "embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32]},
)
# SwinConfig defaults are swin-tiny-patch4-window7-224
register_alias("swin-tiny", "microsoft/swin-tiny-patch4-window7-224", config={"model_type": "swin"})
register_alias(
    "tiny-swin",
    None,
    config={
        "model_type": "swin",
        "image_size": 32,
        "patch_size": 4,
        "embed_dim": 16,
        "depths": [1, 1],
        "num_heads": [1, 2],
        "window_size": 2,
    },
)
TINY_TIMM = "tiny-timm-swin"
_TINY_TIMM = {"img_size": 32, "window_size": 2, "embed_dim": 16, "depths": (1, 1), "num_heads": (1, 2)}


class HFSwinBody(Body):
    """transformers' SwinModel fed with patch tokens (B, h·w, C) on an (h, w) grid.

    Args:
        model: the loaded transformers SwinModel (its embedding layer is bypassed).
        name: the body's name as given (an alias, hub id or folder).
        pretraining_tokens: tokens behind the weights (0 = random init, None = unknown).
    """

    modality = "2d"

    def __init__(self, model: nn.Module, name: str, pretraining_tokens: float | None):
        super().__init__()
        cfg = model.config
        emb = model.embeddings
        self.embedding_init = EmbeddingInit(
            norm_weight=emb.norm.weight.detach().clone(),
            norm_bias=emb.norm.bias.detach().clone(),
            patch_weight=emb.patch_embeddings.projection.weight.detach().clone(),
            patch_bias=emb.patch_embeddings.projection.bias.detach().clone(),
        )
        del model.embeddings  # the embedder replaces it; forward() calls the encoder directly
        model.pooler = None
        self.model = model
        self.name = name
        self.pretraining_tokens = pretraining_tokens
        self.embed_dim = cfg.embed_dim
        self.out_dim = model.num_features
        self.image_size = cfg.image_size
        self.patch_size = cfg.patch_size
        self.output_stride = cfg.patch_size * 2 ** (len(cfg.depths) - 1)
        _uniform_drop_path(model, cfg.drop_path_rate)
        self.decoder_stride = cfg.encoder_stride
        self.image_channels = cfg.num_channels

    def forward(self, tokens, grid):
        enc = self.model.encoder(tokens, tuple(grid), return_dict=True)
        out = self.model.layernorm(enc.last_hidden_state)
        n = len(self.model.config.depths) - 1
        return out, (math.ceil(grid[0] / 2**n), math.ceil(grid[1] / 2**n))


def _uniform_drop_path(model: nn.Module, rate: float) -> None:
    """Every Swin block drops its residual branch with the config's drop_path_rate, as in the transformers ORCA
    pinned (current transformers decays the rate linearly from 0 over depth)."""
    from transformers.models.swin.modeling_swin import SwinDropPath

    for stage in model.encoder.layers:
        for block in stage.blocks:
            block.drop_path = SwinDropPath(rate) if rate > 0 else nn.Identity()


class TimmSwinBody(Body):
    """timm's SwinTransformer fed with patch tokens; timm's stages work on NHWC grids.

    Args:
        model: the loaded timm SwinTransformer (its embedding layer is bypassed).
        name: the body's name as given (an alias, hub id or folder).
        pretraining_tokens: tokens behind the weights (0 = random init, None = unknown).
    """

    modality = "2d"
    family = "swin"

    def __init__(self, model: nn.Module, name: str, pretraining_tokens: float | None):
        super().__init__()
        pe = model.patch_embed
        self.embedding_init = EmbeddingInit(
            norm_weight=pe.norm.weight.detach().clone(),
            norm_bias=pe.norm.bias.detach().clone(),
            patch_weight=pe.proj.weight.detach().clone(),
            patch_bias=pe.proj.bias.detach().clone(),
        )
        patch = pe.proj.kernel_size[0]
        self.image_size = pe.img_size[0]
        del model.patch_embed
        model.reset_classifier(0)
        self.model = model
        self.name = name
        self.pretraining_tokens = pretraining_tokens
        self.embed_dim = pe.proj.out_channels
        self.out_dim = model.num_features
        self.patch_size = patch
        self.output_stride = self.decoder_stride = patch * 2 ** (len(model.layers) - 1)
        self.image_channels = pe.proj.in_channels

    def forward(self, tokens, grid):
        b = tokens.shape[0]
        x = self.model.layers(tokens.reshape(b, grid[0], grid[1], -1))
        x = self.model.norm(x)
        return x.reshape(b, -1, x.shape[-1]), (x.shape[1], x.shape[2])


@register_family
class Swin(Family):
    """transformers' Swin (timm's Swin loads through `load_timm`: it is no transformers model)."""

    name = "swin"
    model_types = ("swin",)
    modality = "2d"

    def wrap(self, model, name, pretraining_tokens, use=""):
        return HFSwinBody(model, name, pretraining_tokens)


def load_timm(name: str, *, dropout: float, random_init: bool) -> Body:
    """A timm Swin body: "timm:ARCH" (HF cache), "timm:ARCH@/path/weights.safetensors", or the test body
    "tiny-timm-swin" (random init only).

    Args:
        name: the body name without "random:".
        dropout: timm's drop_rate.
        random_init: fresh weights instead of the pretrained ones.
    """
    if name == TINY_TIMM:
        return _load_timm(
            "timm:swin_tiny_patch4_window7_224", dropout=dropout, random_init=True, tiny=True, display=name
        )
    return _load_timm(name, dropout=dropout, random_init=random_init)


def _load_timm(
    name: str, *, dropout: float, random_init: bool, tiny: bool = False, display: str = ""
) -> Body:
    import timm

    spec = name.split(":", 1)[1]
    arch, _, weights = spec.partition("@")
    # drop_path_rate: timm's default (0.1 for Swin), as ORCA
    kwargs = {"num_classes": 0, "drop_rate": dropout}
    if tiny:
        kwargs.update(_TINY_TIMM)
    pretrained = not random_init
    if pretrained and weights:
        if not Path(weights).is_file():
            raise BodyNotFoundError(f"timm weights file {weights} does not exist (from body name {name!r})")
        kwargs["pretrained_cfg_overlay"] = {"file": weights}
    elif pretrained:
        hub_id = _timm_hub_id(arch)
        if hub_id and not cached(hub_id) and (offline() or hub_unreachable()):
            raise BodyNotFoundError(
                f"timm body {arch!r} (hub id {hub_id}) is not in the local Hugging Face cache and the hub cannot "
                f"be reached. Run `hf download {hub_id}` where there is internet and copy the cache, or give a "
                f"local weights file: 'timm:{arch}@/path/to/model.safetensors'."
            )
    model = timm.create_model(arch, pretrained=pretrained, **kwargs)
    return TimmSwinBody(model, display or name, 0.0 if random_init else None)


def _timm_hub_id(arch: str) -> str | None:
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:  # unknown arch: timm.create_model raises its own clear error below
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None
